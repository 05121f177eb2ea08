#!/usr/bin/python3
"""Writes autocast_bf16.h5: PyTorch's logits under torch.autocast("cpu",
dtype=torch.bfloat16) for the parity cases, which tests/test_parity.c checks
nn's bf16 products against (train.precision: bf16).

Run by hand (not in CI) with Debian's python3-torch and python3-h5py, after
make_reference.py (it reads the cases' files for their seed and input):

    /usr/bin/python3 tests/reference/make_bf16_reference.py [--dir DIR]

Each case's network is rebuilt with make_reference.py's builders and the same
generated weights (fill_params with the file's seed), fed the file's /input in
eval mode under autocast, and its logits stored as float32: one dataset per
case, /<case>/logits (N, classes), a few hundred bytes in all. autocast runs
convolutions and linear layers in bf16 and hands their bf16 outputs to the
layers after them; nn rounds only the products' operands (its activations stay
float32), so the two differ by bf16 roundings in different places: the test
holds them to the same 1e-2 relative error as nn's bf16 against its float32.
"""

import argparse
import os

import h5py
import numpy as np
import torch

import make_reference as ref


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=here, help="where the case files are and the output goes")
    args = ap.parse_args()
    torch.set_num_threads(1)
    out_path = os.path.join(args.dir, "autocast_bf16.h5")
    tmp = out_path + ".tmp"
    with h5py.File(tmp, "w") as out:
        out.attrs["torch_version"] = str(torch.__version__)
        for name, cfg in ref.CASES.items():
            with h5py.File(os.path.join(args.dir, name + ".h5"), "r") as f:
                seed = int(f.attrs["seed"])
                x = torch.from_numpy(np.array(f["input"]))
                fp32_logits = torch.from_numpy(np.array(f["logits"]))
            model = cfg["build"]().float()
            ref.fill_params(model, seed, cfg["weight_exp"])
            model.eval()
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(x)
            dtype = logits.dtype
            logits = logits.float()
            out.create_dataset(f"{name}/logits", data=logits.numpy())
            rel = ((logits - fp32_logits).norm() / fp32_logits.norm()).item()
            print(f"{name}: logits {tuple(logits.shape)} (autocast gave {dtype}), relative "
                  f"difference to the float64 reference {rel:.2e}")
    os.replace(tmp, out_path)
    print(f"{out_path}: {os.path.getsize(out_path)} bytes")


if __name__ == "__main__":
    main()
