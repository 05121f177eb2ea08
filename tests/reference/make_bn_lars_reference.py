#!/usr/bin/python3
"""Writes tests/reference/bn_lars.h5, the reference tests/test_bn_lars_parity.c
checks nn's batch norm and LARS against.

Run by hand (not in CI) with Debian's python3-torch, python3-h5py, numpy:

    /usr/bin/python3 tests/reference/make_bn_lars_reference.py [--out FILE]

Batch norm comes from torch.nn.BatchNorm1d/2d (PyTorch's own, run in float64
and stored rounded to float32). LARS has no PyTorch implementation: it is
written here in numpy, straight from the formula of You, Gitman and Ginsburg
(2017) as docs/config.md states it, independently of nn/sgd.c.

Layout (every tensor float32):
  /bn2d, /bn1d            one BatchNorm layer alone, in training mode:
      x, dy                input and upstream gradient
      weight, bias, running_mean0, running_var0   the state before
      y, dx, dweight, dbias, running_mean, running_var   after one forward and
                           backward (num_batches_tracked is then 1)
      y_eval               the forward in evaluation mode, after that update
  /net                    a small conv-BN-ReLU-pool / linear-BN1d-ReLU-linear net:
      input (N, 3, 8, 8), labels (N) int32
      init/<name>          parameters and buffers before, state_dict names
      loss, logits         the training-mode forward
      grads/<name>         d mean cross-entropy / d parameter
      step/<name>          parameters and buffers after torch.optim.SGD(lr, momentum,
                           weight_decay) took that one step (attributes lr, momentum,
                           weight_decay)
      eval_logits          the evaluation-mode forward after the step
  /lars                   one LARS step from a checkpoint's state, on /net's shapes:
      w/<name>, g/<name>, v/<name>   weights, averaged gradient, momentum before
      w1/<name>, v1/<name>           after the step
      attributes lr, momentum, weight_decay, eta, eps; "classifier.3.weight" has
      a zero gradient (the trust ratio is then 1)
"""

import argparse
import os

import h5py
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def f32(t):
    if isinstance(t, torch.Tensor):
        t = t.detach().numpy()
    return np.asarray(t, dtype=np.float32)


def rand(gen, *shape, scale=1.0, shift=0.0):
    # float32 values (what the C side reads), computed on in float64.
    return torch.from_numpy(f32(torch.randn(*shape, generator=gen) * scale + shift)).double()


def one_bn(gen, group, bn, x_shape):
    c = x_shape[1]
    with torch.no_grad():
        bn.weight.copy_(rand(gen, c, scale=0.5, shift=1.0))
        bn.bias.copy_(rand(gen, c, scale=0.5))
        bn.running_mean.copy_(rand(gen, c, scale=0.3))
        bn.running_var.copy_(rand(gen, c, scale=0.2, shift=1.0).abs())
    state0 = {k: v.clone() for k, v in bn.state_dict().items()}
    # Channels with an offset and a scale of their own, so that the mean matters.
    x = rand(gen, *x_shape, scale=2.0, shift=0.7).requires_grad_(True)
    dy = rand(gen, *x_shape)
    bn.train()
    y = bn(x)
    y.backward(dy)
    bn.eval()
    with torch.no_grad():
        y_eval = bn(x)
    g = group
    g["x"] = f32(x)
    g["dy"] = f32(dy)
    g["weight"] = f32(state0["weight"])
    g["bias"] = f32(state0["bias"])
    g["running_mean0"] = f32(state0["running_mean"])
    g["running_var0"] = f32(state0["running_var"])
    g["y"] = f32(y)
    g["dx"] = f32(x.grad)
    g["dweight"] = f32(bn.weight.grad)
    g["dbias"] = f32(bn.bias.grad)
    g["running_mean"] = f32(bn.running_mean)
    g["running_var"] = f32(bn.running_var)
    g["y_eval"] = f32(y_eval)
    assert int(bn.num_batches_tracked) == 1


class Net(nn.Module):
    # Module indices as nn names them: features.0 conv, .1 bn, .2 relu, .3 pool;
    # classifier.0 linear, .1 bn, .2 relu, .3 linear.
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                                      nn.MaxPool2d(2))
        self.classifier = nn.Sequential(nn.Linear(4 * 4 * 4, 8), nn.BatchNorm1d(8), nn.ReLU(),
                                        nn.Linear(8, 5))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def lars_numpy(w, g, v, is_weight, lr, m, wd, eta, eps):
    """One LARS step on one tensor, in float64 numpy, as docs/config.md writes it."""
    w = w.astype(np.float64)
    g = g.astype(np.float64)
    v = v.astype(np.float64)
    if is_weight:
        wn = np.sqrt(np.sum(w * w))
        gn = np.sqrt(np.sum(g * g))
        trust = eta * wn / (gn + wd * wn + eps) if wn > 0 and gn > 0 else 1.0
        v1 = m * v + lr * trust * (g + wd * w)
    else:
        v1 = m * v + lr * g
    return w - v1, v1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "bn_lars.h5"))
    args = ap.parse_args()
    gen = torch.Generator().manual_seed(13)
    tmp = args.out + ".tmp"
    with h5py.File(tmp, "w") as f:
        f.attrs["torch_version"] = str(torch.__version__).encode()
        one_bn(gen, f.create_group("bn2d"), nn.BatchNorm2d(5), (4, 5, 3, 6))
        one_bn(gen, f.create_group("bn1d"), nn.BatchNorm1d(7), (6, 7))

        net = Net()
        with torch.no_grad():
            for name, t in net.state_dict().items():
                if name.endswith("num_batches_tracked"):
                    continue
                if name.endswith("running_var"):
                    t.copy_(rand(gen, *t.shape, scale=0.2, shift=1.0).abs())
                elif name.endswith("running_mean"):
                    t.copy_(rand(gen, *t.shape, scale=0.3))
                elif ".1.weight" in name:  # batch norm scale
                    t.copy_(rand(gen, *t.shape, scale=0.3, shift=1.0))
                else:
                    fan_in = t[0].numel() if t.dim() > 1 else 4
                    t.copy_(rand(gen, *t.shape, scale=1.0 / np.sqrt(fan_in)))
        g = f.create_group("net")
        n = 6
        x = rand(gen, n, 3, 8, 8, scale=1.5, shift=0.2)
        labels = torch.tensor([0, 1, 2, 3, 4, 1])
        g["input"] = f32(x)
        g["labels"] = labels.numpy().astype(np.int32)
        init = g.create_group("init")
        for name, t in net.state_dict().items():
            init[name] = f32(t)
        lr, m, wd = 0.1, 0.9, 5e-4
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=m, weight_decay=wd)
        net.train()
        logits = net(x)
        loss = F.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        g["logits"] = f32(logits)
        g["loss"] = f32(loss)
        grads = g.create_group("grads")
        for name, p in net.named_parameters():
            grads[name] = f32(p.grad)
        opt.step()
        step = g.create_group("step")
        step.attrs["lr"], step.attrs["momentum"], step.attrs["weight_decay"] = lr, m, wd
        for name, t in net.state_dict().items():
            step[name] = f32(t)
        net.eval()
        with torch.no_grad():
            g["eval_logits"] = f32(net(x))

        # LARS: weights and gradients of the net, a momentum as a checkpoint
        # would hold it, one step.
        lg = f.create_group("lars")
        lr, m, wd, eta, eps = 0.5, 0.9, 5e-4, 0.001, 1e-9
        for k, val in (("lr", lr), ("momentum", m), ("weight_decay", wd), ("eta", eta),
                       ("eps", eps)):
            lg.attrs[k] = val
        rng = np.random.default_rng(7)
        for name, t in net.named_parameters():
            w = f32(t)
            gr = f32(t.grad) if name != "classifier.3.weight" else np.zeros_like(w)
            v = (rng.standard_normal(w.shape) * 1e-3).astype(np.float32)
            # Conv and linear weights get the trust ratio; biases and batch
            # norm parameters (features.1.*, classifier.1.*) do not.
            is_weight = name.endswith(".weight") and ".1." not in name
            w1, v1 = lars_numpy(w, gr, v, is_weight, lr, m, wd, eta, eps)
            lg["w/" + name] = w
            lg["g/" + name] = gr
            lg["v/" + name] = v
            lg["w1/" + name] = f32(w1)
            lg["v1/" + name] = f32(v1)
    os.replace(tmp, args.out)
    print("wrote", args.out)


if __name__ == "__main__":
    main()
