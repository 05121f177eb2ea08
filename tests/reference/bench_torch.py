#!/usr/bin/python3
"""Times PyTorch on the three AlexNets of alexnet-bench, for docs/performance.md.

    /usr/bin/python3 tests/reference/bench_torch.py --arch alexnet_owt --batch 64 --threads 2

The networks (the same as nn's presets):
  alexnet       the 2012 paper's at 227x227: LRN(5, 1e-4, 0.75, k=2), groups 2 on
                conv2, conv4, conv5 (--groups 1 for the dense variant), 1000 classes
  alexnet_owt   torchvision.models.alexnet(), 224x224, 1000 classes
  alexnet_cifar the seed's 32x32 network (3x3 convs 64-192-384-256-256, fc 4096), 10 classes

A training step is forward + CrossEntropyLoss (mean) + backward +
torch.optim.SGD(lr 0.01, momentum 0.9, weight_decay 5e-4).step(); inference is
a no_grad forward in eval mode. --precision bf16 runs the forward (and the
loss) under torch.autocast("cpu", dtype=torch.bfloat16), PyTorch's one-line
mixed precision: the weights stay float32, convolutions and linear layers run
in bf16 (oneDNN), and backward follows the forward's dtypes. Inputs are random, fixed for the run. After
--warmup untimed iterations, --steps are timed one by one; images/s is the batch
divided by the median step time (the *_best figures use the fastest step:
less disturbed by other processes, but optimistic). Peak RSS is the process's ru_maxrss (training
runs first, so it is the training peak). The 1-min load average before and
after is printed too: anything else running on the cores skews the figures.

Threads: --threads sets torch.set_num_threads, and OMP_NUM_THREADS,
OPENBLAS_NUM_THREADS and MKL_NUM_THREADS must agree with it before torch
loads its libraries; when they do not, the script re-executes itself with them
set, so one command gives the same thread settings as `alexnet-bench --threads N`.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
ARCHS = ("alexnet", "alexnet_owt", "alexnet_cifar")


def parse_args():
    ap = argparse.ArgumentParser(description="Times PyTorch's AlexNet training and inference steps.")
    ap.add_argument("--arch", choices=ARCHS, default="alexnet_owt")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first")
    ap.add_argument("--groups", type=int, default=2, choices=(1, 2), help="alexnet only: conv groups")
    ap.add_argument("--mode", choices=("both", "train", "forward"), default="both")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="fp32",
                    help="bf16: torch.autocast('cpu', dtype=torch.bfloat16)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    args = ap.parse_args()
    if args.batch < 1 or args.threads < 1 or args.steps < 1 or args.warmup < 0:
        ap.error("--batch, --threads and --steps must be >= 1, --warmup >= 0")
    return args


def pin_threads(threads):
    """Re-executes this script with the thread variables set to `threads`
    unless they already are (they are read when torch's libraries load)."""
    want = str(threads)
    if all(os.environ.get(v) == want for v in THREAD_VARS):
        return
    env = dict(os.environ, **{v: want for v in THREAD_VARS})
    sys.stdout.flush()
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def build(arch, groups):
    """The network and its input (C, H, W) and class count."""
    import torch.nn as nn
    import torchvision

    if arch == "alexnet_owt":
        return torchvision.models.alexnet(), (3, 224, 224), 1000
    if arch == "alexnet_cifar":
        features = nn.Sequential(
            nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        classifier_in, classes, size = 256 * 2 * 2, 10, 32
    else:
        lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
        features = nn.Sequential(
            nn.Conv2d(3, 96, 11, stride=4), nn.ReLU(inplace=True), lrn(), nn.MaxPool2d(3, 2),
            nn.Conv2d(96, 256, 5, padding=2, groups=groups), nn.ReLU(inplace=True), lrn(),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(384, 384, 3, padding=1, groups=groups), nn.ReLU(inplace=True),
            nn.Conv2d(384, 256, 3, padding=1, groups=groups), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2))
        classifier_in, classes, size = 256 * 6 * 6, 1000, 227
    classifier = nn.Sequential(
        nn.Dropout(0.5), nn.Linear(classifier_in, 4096), nn.ReLU(inplace=True),
        nn.Dropout(0.5), nn.Linear(4096, 4096), nn.ReLU(inplace=True), nn.Linear(4096, classes))
    return nn.Sequential(features, nn.Flatten(1), classifier), (3, size, size), classes


def timed(fn, warmup, steps):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main():
    args = parse_args()
    pin_threads(args.threads)
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(args.threads)
    bf16 = args.precision == "bf16"

    def autocast():
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16)
    torch.manual_seed(0)
    model, (c, h, w), classes = build(args.arch, args.groups)
    x = torch.randn(args.batch, c, h, w)
    labels = torch.randint(0, classes, (args.batch,))
    res = dict(arch=args.arch, batch=args.batch, threads=args.threads,
               torch_version=str(torch.__version__), steps=args.steps, warmup=args.warmup,
               precision=args.precision, load_avg_before=os.getloadavg()[0])
    if args.arch == "alexnet":
        res["groups"] = args.groups

    if args.mode in ("both", "train"):
        model.train()
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

        def train_step():
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = F.cross_entropy(model(x), labels)
            loss.backward()
            opt.step()

        t = timed(train_step, args.warmup, args.steps)
        res["train_step_ms_median"] = 1e3 * statistics.median(t)
        res["train_step_ms_min"] = 1e3 * min(t)
        res["train_step_ms_max"] = 1e3 * max(t)
        res["train_images_per_sec"] = args.batch / statistics.median(t)
        res["train_images_per_sec_best"] = args.batch / min(t)
        del opt

    if args.mode in ("both", "forward"):
        model.eval()

        def forward():
            with torch.no_grad(), autocast():
                model(x)

        t = timed(forward, args.warmup, args.steps)
        res["forward_ms_median"] = 1e3 * statistics.median(t)
        res["forward_images_per_sec"] = args.batch / statistics.median(t)
        res["forward_images_per_sec_best"] = args.batch / min(t)

    res["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    res["load_avg_after"] = os.getloadavg()[0]  # this run adds about `threads` itself
    if args.json:
        print(json.dumps(res))
        return
    print(f"PyTorch {res['torch_version']}  {args.arch}  {args.precision}  batch {args.batch}"
          f"  threads {args.threads}"
          f"  ({args.steps} timed steps after {args.warmup} warmup; median)")
    if "train_images_per_sec" in res:
        print(f"  train (fwd+bwd+SGD): {res['train_images_per_sec']:8.1f} images/s"
              f"  {res['train_step_ms_median']:8.1f} ms/step"
              f"  (min {res['train_step_ms_min']:.1f}, max {res['train_step_ms_max']:.1f})")
    if "forward_images_per_sec" in res:
        print(f"  inference (eval):    {res['forward_images_per_sec']:8.1f} images/s"
              f"  {res['forward_ms_median']:8.1f} ms/batch"
              f"  (fastest: {res['forward_images_per_sec_best']:.1f} images/s)")
    print(f"  peak RSS: {res['peak_rss_mib']:.0f} MiB")
    print(f"  1-min load average: {res['load_avg_before']:.2f} before, {res['load_avg_after']:.2f} after"
          f" (other processes on the cores make the figures low and noisy)")


if __name__ == "__main__":
    main()
