#!/usr/bin/python3
"""Writes the PyTorch reference files that tests/test_parity.c checks nn against.

Run by hand (not in CI) with Debian's python3-torch and python3-h5py:

    /usr/bin/python3 tests/reference/make_reference.py [--out DIR] [--case NAME]

Each case is a small AlexNet-shaped network built from torch.nn modules in
torchvision's layout (features, optional avgpool, classifier), so parameter
names are PyTorch's own ("features.0.weight"). Dropout layers are present (the
module indices must match) but the model runs in eval mode, where they are the
identity. Inputs and weights are float32 and seeded; the forward and backward
run in float64 and are stored rounded to float32, so the reference is exact
and the C test measures nn's own float32 error. The input is redrawn until no
ReLU sign or max pooling argmax is within --margin of a tie (a decision that
float32 rounding in another summation order could flip, moving a gradient by
percents). See tests/reference/README.md.

Keeping the files small (they are committed):
- The parameters are not stored: each tensor is filled by gen_param(), an
  integer hash of (seed, element index) scaled by a power of two, which the C
  test computes bit for bit (odd multiples of 2^(e-8) with |w| < 2^e, e chosen
  near PyTorch's default bound 1/sqrt(fan_in)). /param_gen holds seed and e.
- Tensors of more than STRIDE_ABOVE elements are stored subsampled: elements
  0, s, 2s, ... with s = SUBSAMPLE (prime, so every kernel offset and channel
  is visited); the dataset's attribute "stride" says s (1 = whole tensor).
- Activations are stored for sample 0 only (diagnostics).

One HDF5 file per case:

    /layers              compound table, one row per module in forward order: name,
                         kind, section, out, kernel_h/w, stride_h/w, pad_top/bottom/
                         left/right, groups, lrn_size, lrn_alpha, lrn_beta, lrn_k,
                         out_h, out_w (adaptive avgpool size), dropout_p, and
                         shape_c/h/w, the module's per-sample output shape
    /param_gen           compound table in state_dict order: name, seed, exponent,
                         count, ndim, dims[4]
    /input               (N, C, H, W) float32
    /labels              (N) int32
    /activations/<name>  module output of sample 0 (which layer differs, if any)
    /logits              (N, classes)
    /loss                scalar, CrossEntropyLoss (mean)
    /grads/<name>        d loss / d param
  and, when the root attribute has_optimizer is 1, torch.optim.SGD checks:
    /grads2/<name>       the gradient at the weights after one step of the first
                         variant below (same batch)
    /optimizer/<variant>/step1/<name>  params after one step fed /grads, from the
                                       initial weights with zero momentum
    /optimizer/<variant>/step2/<name>  ... then a second step fed /grads2 (momentum at
                                       work), for the variants that have it
    attributes of /optimizer/<variant>: lr, momentum, weight_decay, nesterov,
    decay_bias (0: weight decay 0 on biases, as a second param group in torch).
    Variants: the training defaults (lr 0.01, momentum 0.9, weight decay 5e-4),
    and strong ones (lr 0.1, weight decay 0.05) in which weight decay moves a
    weight by 5e-3 of itself per step, far above the test's tolerance: plain,
    nesterov, and without decay on biases.
  Root attributes: arch, batch, num_classes, seed, torch_version, has_optimizer.

The optimizer steps are fed the stored gradients, so the C test checks its SGD
in isolation by loading /grads and /grads2 into net->grads.
"""

import argparse
import copy
import math
import os
import sys

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

# SGD variants: name -> (lr, momentum, weight_decay, nesterov, decay_bias, steps).
OPTIMIZER_VARIANTS = {
    "defaults": (0.01, 0.9, 5e-4, False, True, 2),
    "strong": (0.1, 0.9, 0.05, False, True, 2),
    "strong_nesterov": (0.1, 0.9, 0.05, True, True, 2),
    "strong_no_bias_decay": (0.1, 0.9, 0.05, False, False, 1),
}
STRIDE_ABOVE = 65536  # tensors larger than this are stored subsampled
SUBSAMPLE = 11
MARGIN = 4e-6  # decisions (ReLU signs, max pooling argmax) at least this far from a tie
MAX_ATTEMPTS = 500
PARITY_FLOOR = 1e-2  # test_parity.c's FLOOR, for --compare-float32


class PadConv2d(nn.Conv2d):
    """Conv2d after F.pad(x, (left, right, top, bottom)): the seed's asymmetric
    padding [1, 2]. Same parameters (and names) as a plain Conv2d."""

    def __init__(self, cin, cout, kernel, stride, pad, groups=1):
        super().__init__(cin, cout, kernel, stride=stride, padding=0, groups=groups)
        self.pad = pad  # (left, right, top, bottom), F.pad's order

    def forward(self, x):
        return super().forward(F.pad(x, self.pad))


class Net(nn.Module):
    """torchvision's AlexNet layout: features, optional avgpool, classifier."""

    def __init__(self, features, classifier, avgpool=None):
        super().__init__()
        self.features = nn.Sequential(*features)
        if avgpool is not None:
            self.avgpool = avgpool
        self.classifier = nn.Sequential(*classifier)

    def forward(self, x):
        x = self.features(x)
        if hasattr(self, "avgpool"):
            x = self.avgpool(x)
        return self.classifier(torch.flatten(x, 1))


# ---------------------------------------------------------------------------
# The cases

def alexnet_cifar(fc):
    """The seed's 32x32 network, hidden fc width shrunk from 4096 to `fc`."""
    features = [
        nn.Conv2d(3, 64, 3, stride=2, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(64, 192, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(192, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1), nn.ReLU(),
        nn.Conv2d(256, 256, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    ]
    classifier = [
        nn.Dropout(0.5), nn.Linear(256 * 2 * 2, fc), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(fc, fc), nn.ReLU(), nn.Linear(fc, 10),
    ]
    return Net(features, classifier)


def alexnet_small():
    """The 2012 paper's network with channels 16-32-48-48-32 and fc 64: conv1
    k11 s4 after the seed's padding [1, 2], LRN(5, 1e-4, 0.75, k=2) after the
    first two ReLUs, overlapping 3/2 max pooling, groups 2 on conv2, 4, 5."""
    lrn = lambda: nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=2.0)
    features = [
        PadConv2d(3, 16, 11, 4, (1, 2, 1, 2)), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(16, 32, 5, padding=2, groups=2), nn.ReLU(), lrn(), nn.MaxPool2d(3, 2),
        nn.Conv2d(32, 48, 3, padding=1), nn.ReLU(),
        nn.Conv2d(48, 48, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(48, 32, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
    ]
    classifier = [
        nn.Dropout(0.5), nn.Linear(32 * 2 * 2, 64), nn.ReLU(),
        nn.Dropout(0.5), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 7),
    ]
    return Net(features, classifier)


def alexnet_owt_small():
    """torchvision's AlexNet (alexnet_owt) with channels 16-24-32-24-16, a
    non-square input whose last feature map (3x5) does not divide the adaptive
    average pooling's 6x6, and tanh in the classifier. conv1 pads 2 rows and 3
    columns, so that a height/width mix-up in padding shows."""
    features = [
        nn.Conv2d(3, 16, 11, stride=4, padding=(2, 3)), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(16, 24, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Conv2d(24, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 24, 3, padding=1), nn.ReLU(),
        nn.Conv2d(24, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2),
    ]
    classifier = [
        nn.Dropout(0.5), nn.Linear(16 * 6 * 6, 64), nn.Tanh(),
        nn.Dropout(0.5), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, 5),
    ]
    return Net(features, classifier, avgpool=nn.AdaptiveAvgPool2d((6, 6)))


# build, input (N, C, H, W), classes, input scale, extra weight exponent per
# module (a power of two on top of the default bound), optimizer checks.
# alexnet_small's input has the scale of mean-subtracted pixels, as in the
# paper: with alpha 1e-4 the LRN term only matters (and so a wrong LRN only
# shows above the test's tolerance) when activations are tens, not ones.
CASES = {
    "alexnet_cifar": dict(build=lambda: alexnet_cifar(256), input=(4, 3, 32, 32), classes=10,
                          input_scale=1.0, weight_exp={"classifier.6": 2}, optimizer=False),
    "alexnet_small": dict(build=alexnet_small, input=(3, 3, 99, 99), classes=7,
                          input_scale=50.0,
                          weight_exp={"features.4": 1, "features.8": -2, "classifier.1": 1,
                                      "classifier.4": 1, "classifier.6": 1},
                          optimizer=True),
    "alexnet_owt_small": dict(build=alexnet_owt_small, input=(2, 3, 127, 191), classes=5,
                              input_scale=1.0,
                              weight_exp={"classifier.1": 5, "classifier.4": 1,
                                          "classifier.6": 1},
                              optimizer=False),
}


# ---------------------------------------------------------------------------
# Parameters the C test can regenerate exactly

def hash32(seed, idx):
    """lowbias32 of (idx * 0x9E3779B1 + seed * 0x85EBCA77) mod 2^32; idx a uint64 array."""
    m = np.uint64(0xFFFFFFFF)
    x = (idx * np.uint64(0x9E3779B1) + np.uint64(seed) * np.uint64(0x85EBCA77)) & m
    x ^= x >> np.uint64(16)
    x = (x * np.uint64(0x7FEB352D)) & m
    x ^= x >> np.uint64(15)
    x = (x * np.uint64(0x846CA68B)) & m
    x ^= x >> np.uint64(16)
    return x


def gen_param(seed, exponent, count):
    """Element i = (2 * (hash32(seed, i) >> 24) - 255) * 2^(exponent - 8): odd
    multiples of a power of two, uniform in (-2^exponent, 2^exponent), exact in
    float32 (test_parity.c's gen_param computes the same bits)."""
    v = (hash32(seed, np.arange(count, dtype=np.uint64)) >> np.uint64(24)).astype(np.int64)
    return ((2 * v - 255).astype(np.float32) * np.float32(2.0 ** (exponent - 8))).astype(np.float32)


PARAM_GEN_DTYPE = np.dtype([("name", "S64"), ("seed", "<u4"), ("exponent", "<i4"),
                            ("count", "<i8"), ("ndim", "<i4"), ("dims", "<i4", (4,))])


def fill_params(model, case_seed, weight_exp):
    rows = []
    with torch.no_grad():
        for t, (name, p) in enumerate(model.named_parameters()):
            module = name.rsplit(".", 1)[0]
            w = model.get_submodule(module).weight
            fan_in = w[0].numel()
            e = round(math.log2(1.0 / math.sqrt(fan_in))) + weight_exp.get(module, 0)
            seed = case_seed * 1000 + t
            p.copy_(torch.from_numpy(gen_param(seed, e, p.numel())).reshape(p.shape))
            r = np.zeros((), dtype=PARAM_GEN_DTYPE)
            r["name"], r["seed"], r["exponent"], r["count"] = name.encode(), seed, e, p.numel()
            r["ndim"] = p.dim()
            r["dims"][: p.dim()] = p.shape
            rows.append(r)
    return np.array(rows, dtype=PARAM_GEN_DTYPE)


# ---------------------------------------------------------------------------
# Describing the modules for the C test

LAYER_DTYPE = np.dtype([
    ("name", "S32"), ("kind", "S8"), ("section", "S12"), ("out", "<i4"),
    ("kernel_h", "<i4"), ("kernel_w", "<i4"), ("stride_h", "<i4"), ("stride_w", "<i4"),
    ("pad_top", "<i4"), ("pad_bottom", "<i4"), ("pad_left", "<i4"), ("pad_right", "<i4"),
    ("groups", "<i4"), ("lrn_size", "<i4"), ("lrn_alpha", "<f4"), ("lrn_beta", "<f4"),
    ("lrn_k", "<f4"), ("out_h", "<i4"), ("out_w", "<i4"), ("dropout_p", "<f4"),
    ("shape_c", "<i4"), ("shape_h", "<i4"), ("shape_w", "<i4"),
])


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def describe(name, section, m):
    """One /layers row for module m (output shape filled in by the caller)."""
    r = np.zeros((), dtype=LAYER_DTYPE)
    r["name"], r["section"] = name.encode(), section.encode()
    if isinstance(m, nn.Conv2d):
        r["kind"], r["out"], r["groups"] = b"conv", m.out_channels, m.groups
        r["kernel_h"], r["kernel_w"] = m.kernel_size
        r["stride_h"], r["stride_w"] = m.stride
        if isinstance(m, PadConv2d):
            r["pad_left"], r["pad_right"], r["pad_top"], r["pad_bottom"] = m.pad
        else:
            ph, pw = m.padding
            r["pad_top"] = r["pad_bottom"] = ph
            r["pad_left"] = r["pad_right"] = pw
    elif isinstance(m, nn.Linear):
        r["kind"], r["out"] = b"linear", m.out_features
    elif isinstance(m, nn.ReLU):
        r["kind"] = b"relu"
    elif isinstance(m, nn.Tanh):
        r["kind"] = b"tanh"
    elif isinstance(m, nn.LocalResponseNorm):
        r["kind"], r["lrn_size"] = b"lrn", m.size
        r["lrn_alpha"], r["lrn_beta"], r["lrn_k"] = m.alpha, m.beta, m.k
    elif isinstance(m, nn.MaxPool2d):
        assert not m.ceil_mode and pair(m.dilation) == (1, 1)
        r["kind"] = b"maxpool"
        r["kernel_h"], r["kernel_w"] = pair(m.kernel_size)
        r["stride_h"], r["stride_w"] = pair(m.stride)
        ph, pw = pair(m.padding)
        r["pad_top"] = r["pad_bottom"] = ph
        r["pad_left"] = r["pad_right"] = pw
    elif isinstance(m, nn.AdaptiveAvgPool2d):
        r["kind"] = b"avgpool"
        r["out_h"], r["out_w"] = pair(m.output_size)
    elif isinstance(m, nn.Dropout):
        r["kind"], r["dropout_p"] = b"dropout", m.p
    else:
        raise ValueError(f"{name}: no nn kind for {type(m).__name__}")
    return r


def modules_in_order(model):
    """(name, section, module) for every module in forward order."""
    out = [(f"features.{i}", "features", m) for i, m in enumerate(model.features)]
    if hasattr(model, "avgpool"):
        out.append(("avgpool", "avgpool", model.avgpool))
    out += [(f"classifier.{i}", "classifier", m) for i, m in enumerate(model.classifier)]
    return out


# ---------------------------------------------------------------------------
# Computing the references

def snapshot(model, attr=None):
    """Parameters (or their gradients) by name, as float32."""
    return {k: (p.grad if attr else p).detach().float().clone() for k, p in model.named_parameters()}


def forward_backward(model64, x, labels, record=None):
    """Float64 forward and backward of float32 data: logits, loss, gradients
    (rounded to float32 when stored) and, if record is a dict, every module's
    output by name."""
    hooks = []
    if record is not None:
        hooks = [m.register_forward_hook(
            lambda mod, inp, out, key=key: record.__setitem__(key, out.detach().clone()))
            for key, _, m in modules_in_order(model64)]
    model64.zero_grad(set_to_none=True)
    logits = model64(x.double())
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    for hk in hooks:
        hk.remove()
    return logits.detach(), loss.detach(), snapshot(model64, "grad")


def decision_margin(model, acts, x):
    """The smallest margin of the forward's discrete decisions, relative to
    the largest magnitude of the layer's input: |v| of ReLU inputs (the sign
    decides the mask) and the gap between the largest and second largest
    value of each max pooling window (the argmax routes the gradient). A
    margin of the order of float32 rounding lets an implementation that sums
    in another order flip a decision and change a gradient by percents."""
    worst, where = float("inf"), None
    mods = modules_in_order(model)
    for i, (key, _, m) in enumerate(mods):
        inp = x.double() if i == 0 else acts[mods[i - 1][0]]
        big = inp.abs().max().item()
        if isinstance(m, nn.ReLU):
            margin = inp.abs().min().item() / big
        elif isinstance(m, nn.MaxPool2d):
            k, s = pair(m.kernel_size), pair(m.stride)
            win = F.unfold(inp, k, stride=s).reshape(inp.shape[0], inp.shape[1], k[0] * k[1], -1)
            top = win.topk(2, dim=2).values
            gap = top[:, :, 0] - top[:, :, 1]
            # Exact ties of zeros (ReLU outputs) are taken by the first element
            # on both sides; only near ties of distinct values are fragile.
            gap = gap[(gap > 0) | (top[:, :, 0] != 0)]
            margin = gap.min().item() / big if gap.numel() else float("inf")
        else:
            continue
        if margin < worst:
            worst, where = margin, key
    return worst, where


def run_case(name, cfg, case_seed, margin):
    torch.manual_seed(case_seed)
    model = cfg["build"]().float()
    param_gen = fill_params(model, case_seed, cfg["weight_exp"])
    model.eval()  # dropout is the identity; nothing else changes
    model64 = copy.deepcopy(model).double()
    init = snapshot(model)

    # Draw inputs until no decision of the forward is within `margin`.
    n, c, h, w = cfg["input"]
    for attempt in range(MAX_ATTEMPTS):
        torch.manual_seed(case_seed * 1000 + attempt)
        x = (torch.randn(n, c, h, w) * cfg["input_scale"]).float()
        labels = torch.randint(0, cfg["classes"], (n,), dtype=torch.int64)
        acts = {}
        logits, loss, grads = forward_backward(model64, x, labels, acts)
        worst, where = decision_margin(model64, acts, x)
        if worst >= margin:
            break
    else:
        sys.exit(f"{name}: no input in {MAX_ATTEMPTS} draws keeps the ReLU/max pooling decisions "
                 f"{margin:g} away from a tie; lower --margin")

    rows = []
    for key, section, m in modules_in_order(model):
        r = describe(key, section, m)
        a = acts[key]
        r["shape_c"], r["shape_h"], r["shape_w"] = (a.shape[1], 1, 1) if a.dim() == 2 else a.shape[1:]
        rows.append(r)

    out = dict(layers=np.array(rows, dtype=LAYER_DTYPE), param_gen=param_gen, x=x, labels=labels,
               acts=acts, logits=logits, loss=loss, grads=grads, attempt=attempt,
               margin=(worst, where), init=init)
    if not cfg["optimizer"]:
        return model, out

    # torch.optim.SGD in float32 on the float32 weights, fed the reference's
    # gradients. The second gradient is taken (in float64) at the weights after
    # one step of the first variant.
    def step_with(opt, g):
        for k, p in model.named_parameters():
            p.grad = g[k].clone()
        opt.step()
        return snapshot(model)

    out["optimizer"] = {}
    for vname, (lr, m, wd, nesterov, decay_bias, steps) in OPTIMIZER_VARIANTS.items():
        with torch.no_grad():
            for k, p in model.named_parameters():
                p.copy_(init[k])
        if decay_bias:
            groups = model.parameters()
        else:
            groups = [{"params": [p for k, p in model.named_parameters() if not k.endswith(".bias")]},
                      {"params": [p for k, p in model.named_parameters() if k.endswith(".bias")],
                       "weight_decay": 0.0}]
        opt = torch.optim.SGD(groups, lr=lr, momentum=m, weight_decay=wd, nesterov=nesterov)
        res = {"step1": step_with(opt, grads)}
        if "grads2" not in out:
            with torch.no_grad():
                for k, p in model64.named_parameters():
                    p.copy_(res["step1"][k].double())
            out["grads2"] = forward_backward(model64, x, labels)[2]
        if steps == 2:
            res["step2"] = step_with(opt, out["grads2"])
        out["optimizer"][vname] = res
    return model, out


def compare_float32(model, out):
    """torch's own float32 forward/backward against the reference, with
    test_parity.c's metric: what the C test's tolerance means in practice."""
    with torch.no_grad():
        for k, p in model.named_parameters():
            p.copy_(out["init"][k])
    model.eval()
    model.zero_grad(set_to_none=True)
    logits = model(out["x"])
    F.cross_entropy(logits, out["labels"]).backward()

    def err(got, want):
        got, want = got.reshape(-1).double(), want.reshape(-1).double()
        floor = PARITY_FLOOR * want.abs().max()
        return ((got - want).abs() / torch.clamp(want.abs(), min=floor)).max().item()

    print(f"  torch float32 vs the reference: logits {err(logits.detach(), out['logits']):.2e}")
    for k, p in model.named_parameters():
        print(f"    grad {k:24s} {err(p.grad, out['grads'][k]):.2e}")


def lrn_effect(model, out):
    """For each LRN: max |y - x / k^beta| / max |y|, how much the normalization
    term moves the output. A tiny value would let a wrong LRN window pass."""
    res = {}
    mods = modules_in_order(model)
    for i, (key, _, m) in enumerate(mods):
        if isinstance(m, nn.LocalResponseNorm):
            x, y = out["acts"][mods[i - 1][0]], out["acts"][key]
            res[key] = float((y - x / m.k ** m.beta).abs().max() / y.abs().max())
    return res


def put(group, name, t):
    """Stores tensor t, subsampled with stride SUBSAMPLE if it is large."""
    a = t.detach().cpu().numpy().astype(np.float32)
    stride = SUBSAMPLE if a.size > STRIDE_ABOVE else 1
    if stride > 1:
        a = a.reshape(-1)[::stride]
    ds = group.create_dataset(name, data=a)
    ds.attrs["stride"] = np.int32(stride)


def write_case(path, name, cfg, seed, out):
    tmp = path + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["arch"] = name
        f.attrs["batch"] = np.int32(cfg["input"][0])
        f.attrs["num_classes"] = np.int32(cfg["classes"])
        f.attrs["seed"] = np.int32(seed)
        f.attrs["torch_version"] = str(torch.__version__)
        f.attrs["has_optimizer"] = np.int32(cfg["optimizer"])
        f.create_dataset("layers", data=out["layers"])
        f.create_dataset("param_gen", data=out["param_gen"])
        f.create_dataset("input", data=out["x"].numpy().astype(np.float32))
        f.create_dataset("labels", data=out["labels"].numpy().astype(np.int32))
        f.create_dataset("logits", data=out["logits"].numpy().astype(np.float32))
        f.create_dataset("loss", data=np.float32(out["loss"].item()))
        g = f.create_group("activations")
        for k, v in out["acts"].items():
            g.create_dataset(k, data=v[0].numpy().astype(np.float32))
        names = [row["name"].decode() for row in out["param_gen"]]
        for gname in ["grads", "grads2"] if cfg["optimizer"] else ["grads"]:
            g = f.create_group(gname)
            for k in names:
                put(g, k, out[gname][k])
        for vname, res in out.get("optimizer", {}).items():
            lr, m, wd, nesterov, decay_bias, _ = OPTIMIZER_VARIANTS[vname]
            v = f.create_group(f"optimizer/{vname}")
            v.attrs["lr"], v.attrs["momentum"] = np.float32(lr), np.float32(m)
            v.attrs["weight_decay"] = np.float32(wd)
            v.attrs["nesterov"], v.attrs["decay_bias"] = np.int32(nesterov), np.int32(decay_bias)
            for step, params in res.items():
                g = v.create_group(step)
                for k in names:
                    put(g, k, params[k])
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)),
                    help="directory for the .h5 files (default: beside this script)")
    ap.add_argument("--case", action="append", choices=sorted(CASES),
                    help="write only this case (repeatable; default: all)")
    ap.add_argument("--seed", type=int, default=2012)
    ap.add_argument("--margin", type=float, default=MARGIN,
                    help="how far every ReLU/max pooling decision must be from a tie, "
                         "relative to the layer's largest input (default %(default)g)")
    ap.add_argument("--compare-float32", action="store_true",
                    help="also print how far torch's own float32 result is from the reference")
    args = ap.parse_args()

    torch.set_num_threads(1)  # one summation order from run to run
    for name in args.case or list(CASES):
        cfg = CASES[name]
        seed = args.seed + list(CASES).index(name)
        model, out = run_case(name, cfg, seed, args.margin)
        path = os.path.join(args.out, name + ".h5")
        write_case(path, name, cfg, seed, out)
        lg = out["logits"]
        nparams = sum(p.numel() for p in model.parameters())
        print(f"{path}: {os.path.getsize(path) / 2**20:.2f} MiB, {nparams} params, "
              f"loss {out['loss'].item():.5f} (ln {cfg['classes']} = {math.log(cfg['classes']):.5f}), "
              f"|logits| max {lg.abs().max().item():.3g}")
        print(f"  input draw {out['attempt']}: the closest decision to a tie is "
              f"{out['margin'][0]:.3g} of the layer's max (at {out['margin'][1]})")
        for key, _, m in modules_in_order(model):
            a = out["acts"][key]
            print(f"  {key:14s} {type(m).__name__:18s} {str(tuple(a.shape[1:])):16s} "
                  f"rms {a.pow(2).mean().sqrt().item():.4g}  zeros {(a == 0).double().mean().item():.2f}")
        for key, s in lrn_effect(model, out).items():
            print(f"  LRN {key}: the normalization term moves the output by {s:.3g} of its max")
            if s < 1e-2:
                sys.exit(f"{name}: LRN {key} barely acts ({s:.3g}); raise the activations")
        if args.compare_float32:
            compare_float32(model, out)


if __name__ == "__main__":
    main()
