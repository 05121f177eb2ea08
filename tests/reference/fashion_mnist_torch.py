#!/usr/bin/python3
"""The configs/fashion-mnist.yaml recipe in PyTorch, for docs/recipes.md's
side-by-side: the same network (five 3x3 convs with batch norm, two hidden
fully connected layers with dropout 0.25), the same data (the HDF5 files
launch/fashion-mnist-demo converts, normalized by the training file's mean
and std, random horizontal flips), the same recipe (kaiming init, SGD with
Nesterov momentum 0.9, lr 0.1, weight decay 5e-4 on every parameter, half an
epoch of linear warmup from 0, then cosine to 0 at the last epoch, the lr
set before every step as alexnet-train does), global batch 128.

One process with --threads threads (default 2, the machine's cores), as
PyTorch users run it on a CPU; it evaluates the test set after every epoch
and prints, per epoch, the top-1 and the wall time since the start, then the
time to --target top-1 (default 0.90).

    /usr/bin/python3 tests/reference/fashion_mnist_torch.py [--epochs 10] [--threads 2]
        [--train data/fashion-mnist/train.h5] [--val data/fashion-mnist/test.h5]

The wall time counts training and evaluation, not the loading of the files
into memory (alexnet-train reads them while it trains).
"""

import argparse
import math
import os
import time

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def network():
    def block(cin, cout):
        return [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    features = nn.Sequential(*block(1, 32), nn.MaxPool2d(2), *block(32, 64), nn.MaxPool2d(2),
                             *block(64, 128), *block(128, 128), *block(128, 128),
                             nn.MaxPool2d(3, 2))
    classifier = nn.Sequential(nn.Dropout(0.25), nn.Linear(1152, 512), nn.ReLU(inplace=True),
                               nn.Dropout(0.25), nn.Linear(512, 512), nn.ReLU(inplace=True),
                               nn.Linear(512, 10))
    net = nn.Sequential(features, nn.Flatten(), classifier)
    # model.weight_init: kaiming (He et al.): N(0, 2 / fan_in), the last layer
    # N(0, 1 / fan_in), biases 0; batch norm weight 1, bias 0 (PyTorch's).
    layers = [m for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    for i, m in enumerate(layers):
        fan_in = m.weight[0].numel()
        gain = 1.0 if i == len(layers) - 1 else 2.0
        nn.init.normal_(m.weight, 0.0, math.sqrt(gain / fan_in))
        nn.init.zeros_(m.bias)
    return net


def load(path):
    with h5py.File(path, "r") as f:
        x = np.asarray(f["images"], dtype=np.float32)[..., 0] / 255.0  # (N, 28, 28)
        y = np.asarray(f["labels"], dtype=np.int64)
        mean = float(np.asarray(f.attrs["mean"]).reshape(-1)[0])
        std = float(np.asarray(f.attrs["std"]).reshape(-1)[0])
    return x, y, mean, std


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", default="data/fashion-mnist/train.h5")
    ap.add_argument("--val", default="data/fashion-mnist/test.h5")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--lr", type=float, default=0.1)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--target", type=float, default=0.90)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    xtr, ytr, mean, std = load(args.train)
    xva, yva, _, _ = load(args.val)  # normalized with the training file's statistics
    xtr = torch.from_numpy((xtr - mean) / std).unsqueeze(1)
    xva = torch.from_numpy((xva - mean) / std).unsqueeze(1)
    ytr, yva = torch.from_numpy(ytr), torch.from_numpy(yva)
    net = network()
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9, nesterov=True,
                          weight_decay=5e-4)
    steps = len(xtr) // args.batch  # alexnet-train drops the last partial batch
    total = steps * args.epochs
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()
    reached = None
    print("pytorch %s, %d threads, %d steps per epoch, %d epochs" % (torch.__version__,
                                                                    args.threads, steps,
                                                                    args.epochs), flush=True)
    for epoch in range(args.epochs):
        net.train()
        order = torch.randperm(len(xtr), generator=gen)
        for s in range(steps):
            e = (epoch * steps + s) / steps  # fractional epoch at the start of the step
            lr = 0.5 * args.lr * (1 + math.cos(math.pi * min(e, args.epochs) / args.epochs))
            if e < args.warmup:
                lr *= e / args.warmup
            for g in opt.param_groups:
                g["lr"] = lr
            idx = order[s * args.batch:(s + 1) * args.batch]
            x = xtr[idx]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
            loss = F.cross_entropy(net(x), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        net.eval()
        correct = 0
        with torch.no_grad():
            for i in range(0, len(xva), 1000):
                correct += (net(xva[i:i + 1000]).argmax(1) == yva[i:i + 1000]).sum().item()
        top1 = correct / len(xva)
        wall = time.time() - start
        print("epoch %d: top-1 %.4f, %.1f s since the start (load %s)"
              % (epoch + 1, top1, wall, " ".join("%.2f" % v for v in os.getloadavg())),
              flush=True)
        if reached is None and top1 >= args.target:
            reached = wall
    print("time to %.2f top-1: %s" % (args.target, "%.1f s" % reached if reached is not None
                                      else "not reached"), flush=True)


if __name__ == "__main__":
    main()
