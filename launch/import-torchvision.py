#!/usr/bin/python3
"""Convert torchvision AlexNet weights to an alexnet-train checkpoint, and back.

    import-torchvision.py alexnet-owt-4df8aa71.pth -o alexnet_owt.h5 [--labels classes.txt]
    import-torchvision.py --export runs/x/checkpoints/step-00001000.h5 -o state_dict.pth

Import reads a torchvision AlexNet state dict (torchvision.models.alexnet(),
the "one weird trick" single-tower net, our arch alexnet_owt) and writes our
HDF5 checkpoint exactly as launch/checkpoint.c does (docs/checkpoint-format.md):
/model/<name> float32 tensors, ImageNet's mean and std, a minimal stored
config (model.arch alexnet_owt, the class count, 224x224 input), no optimizer
state, the FNV-1a checksum, and the completeness marker last. alexnet-predict
and alexnet-eval then use it like any checkpoint. No download happens: the
user supplies the .pth file.

Export writes the parameters of one of our checkpoints as a state dict that
torch.load reads (and torchvision.models.alexnet() loads by name, for
alexnet_owt checkpoints).

Needs Debian's python3-torch and python3-h5py (run with /usr/bin/python3).
Exit status: 0 done, 1 a file could not be read or written or does not fit,
2 a bad command line.
"""

import argparse
import collections
import os
import re
import sys

PROG = "import-torchvision.py"
FORMAT_NAME = "alexnet-checkpoint"
FORMAT_VERSION = 1
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
FNV_OFFSET = 0xCBF29CE484222325
FNV_PRIME = 0x100000001B3
MASK64 = (1 << 64) - 1


class Failure(Exception):
    """A message for the user; the program exits with status 1."""


def owt_shapes(num_classes, in_channels):
    """torchvision AlexNet's state dict: name -> shape, in state_dict order."""
    convs = [(0, 64, in_channels, 11), (3, 192, 64, 5), (6, 384, 192, 3),
             (8, 256, 384, 3), (10, 256, 256, 3)]
    shapes = collections.OrderedDict()
    for idx, out, inp, k in convs:
        shapes["features.%d.weight" % idx] = (out, inp, k, k)
        shapes["features.%d.bias" % idx] = (out,)
    for idx, out, inp in [(1, 4096, 256 * 6 * 6), (4, 4096, 4096), (6, num_classes, 4096)]:
        shapes["classifier.%d.weight" % idx] = (out, inp)
        shapes["classifier.%d.bias" % idx] = (out,)
    return shapes


def checksum_update(h, array):
    """FNV-1a over the 64-bit little-endian words of a float32 array's bytes,
    a trailing odd 32-bit word hashed alone (launch/checkpoint.c)."""
    import numpy as np
    flat = np.ascontiguousarray(array, dtype="<f4").reshape(-1)
    words = flat.view("<u4")
    pairs = words[: words.size // 2 * 2].view("<u8")
    chunk = 1 << 20
    for start in range(0, pairs.size, chunk):
        for w in pairs[start:start + chunk].tolist():
            h = ((h ^ w) * FNV_PRIME) & MASK64
    if words.size % 2:
        h = ((h ^ int(words[-1])) * FNV_PRIME) & MASK64
    return h


def read_labels(path):
    """The lines of a class names file (CR before LF and a missing last newline are fine)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise Failure("labels %s: %s" % (path, e))
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [l[:-1] if l.endswith("\r") else l for l in lines]


def check_output_dir(out):
    """Fails before the slow part when out cannot be created."""
    folder = os.path.dirname(out) or "."
    if not os.path.isdir(folder):
        raise Failure("%s: cannot write: no such directory %s" % (out, folder))


def load_state_dict(path):
    if not os.path.isfile(path):
        raise Failure("%s: no such file" % path)
    import torch  # only now: it takes a second to load
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a file that is not its own
        raise Failure("%s: cannot read as a PyTorch state dict (%s: %s)"
                      % (path, type(e).__name__, str(e).splitlines()[0] if str(e) else ""))
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise Failure("%s: holds a %s, not a state dict" % (path, type(obj).__name__))
    state = collections.OrderedDict()
    for key, value in obj.items():
        if not isinstance(value, torch.Tensor):
            raise Failure("%s: entry %s is of type %s, not a tensor"
                          % (path, key, type(value).__name__))
        name = key[len("module."):] if key.startswith("module.") else key
        state[name] = value.detach().to(torch.float32).contiguous().numpy()
    return state


def write_checkpoint(out, tensors, num_classes, input_shape, config, class_names, arch):
    """Writes our checkpoint format, under out.tmp first, complete = 1 last."""
    import h5py
    import numpy as np
    tmp = out + ".tmp"
    try:
        if os.path.exists(tmp):
            os.unlink(tmp)
        h = FNV_OFFSET
        with h5py.File(tmp, "w") as f:
            model = f.create_group("model")
            for name, array in tensors.items():
                model.create_dataset(name, data=np.ascontiguousarray(array, dtype="<f4"))
                h = checksum_update(h, array)
            if class_names is not None:
                f.create_dataset("classes", data=class_names,
                                 dtype=h5py.string_dtype(encoding="utf-8"))
            a = f.attrs
            a.create("format", FORMAT_NAME, dtype=h5py.string_dtype(encoding="utf-8"))
            a.create("version", FORMAT_VERSION, dtype="<i4")
            a.create("step", 0, dtype="<i8")
            a.create("epoch", 0, dtype="<i8")
            a.create("step_in_epoch", 0, dtype="<i8")
            a.create("seed", 0, dtype="<u8")
            a.create("arch", arch, dtype=h5py.string_dtype(encoding="utf-8"))
            a.create("config", config, dtype=h5py.string_dtype(encoding="utf-8"))
            a.create("num_classes", num_classes, dtype="<i4")
            a.create("input", np.array(input_shape, dtype="<i4"))
            a.create("mean", np.array(IMAGENET_MEAN, dtype="<f4"))
            a.create("std", np.array(IMAGENET_STD, dtype="<f4"))
            a.create("has_momentum", 0, dtype="<i4")
            a.create("checksum", h, dtype="<u8")
            f.flush()
            a.create("complete", 1, dtype="<i4")
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, out)
    except OSError as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise Failure("%s: cannot write: %s" % (out, e))


def import_torchvision(src, out, labels, input_size):
    check_output_dir(out)
    names = read_labels(labels) if labels else None
    state = load_state_dict(src)
    if "classifier.6.weight" not in state or "features.0.weight" not in state:
        raise Failure("%s: not a torchvision AlexNet state dict (no features.0.weight or "
                      "classifier.6.weight; it has %s)" % (src, ", ".join(list(state)[:6]) or "nothing"))
    num_classes = int(state["classifier.6.weight"].shape[0])
    in_channels = int(state["features.0.weight"].shape[1])
    want = owt_shapes(num_classes, in_channels)
    missing = [k for k in want if k not in state]
    extra = [k for k in state if k not in want]
    if missing or extra:
        raise Failure("%s: not torchvision's AlexNet: %s%s%s" % (
            src, "missing " + ", ".join(missing) if missing else "",
            "; " if missing and extra else "", "unexpected " + ", ".join(extra) if extra else ""))
    for name, shape in want.items():
        got = tuple(state[name].shape)
        if got != shape:
            raise Failure("%s: %s has shape %s, torchvision's AlexNet has %s"
                          % (src, name, "x".join(map(str, got)), "x".join(map(str, shape))))
    tensors = collections.OrderedDict((name, state[name]) for name in want)
    if names is not None and len(names) != num_classes:
        raise Failure("labels %s: %d lines, but the model has %d classes (one name per line)"
                      % (labels, len(names), num_classes))
    stem = os.path.splitext(os.path.basename(out))[0] or "imported"
    config = ("# imported by import-torchvision.py from %s\n"
              "run:\n  name: %s\n"
              "model:\n  arch: alexnet_owt\n  num_classes: %d\n  in_channels: %d\n"
              "data:\n  crop: %d\n  mean: [%s]\n  std: [%s]\n"
              % (os.path.basename(src), re.sub(r"[^A-Za-z0-9_.-]", "_", stem), num_classes,
                 in_channels, input_size, ", ".join(map(repr, IMAGENET_MEAN)),
                 ", ".join(map(repr, IMAGENET_STD))))
    write_checkpoint(out, tensors, num_classes, (in_channels, input_size, input_size), config,
                     names, "alexnet_owt")
    count = sum(int(t.size) for t in tensors.values())
    print("%s: %d tensors, %d parameters, %d classes -> %s" % (src, len(tensors), count,
                                                               num_classes, out))


# A module's tensors in PyTorch's state_dict order: parameters, then batch
# norm's buffers.
TENSOR_ORDER = {"weight": 0, "bias": 1, "running_mean": 2, "running_var": 3,
                "num_batches_tracked": 4}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def state_order(name):
    """Sort key giving PyTorch's state_dict order of our names."""
    m = re.match(r"^(features|avgpool|classifier)\.(\d+)\.(\w+)$", name)
    if not m or m.group(3) not in TENSOR_ORDER:
        return (3, 0, 0, name)
    section = {"features": 0, "avgpool": 1, "classifier": 2}[m.group(1)]
    return (section, int(m.group(2)), TENSOR_ORDER[m.group(3)], name)


def is_buffer(name):
    return name.rsplit(".", 1)[-1] in BUFFERS


def export_checkpoint(src, out):
    import h5py
    import numpy as np
    if not os.path.isfile(src):
        raise Failure("checkpoint %s: no such file" % src)
    check_output_dir(out)
    try:
        f = h5py.File(src, "r")
    except OSError as e:
        raise Failure("checkpoint %s: not an HDF5 file (%s)" % (src, e))
    with f:
        fmt = f.attrs.get("format")
        if isinstance(fmt, bytes):
            fmt = fmt.decode("utf-8", "replace")
        if fmt != FORMAT_NAME:
            raise Failure("checkpoint %s: attribute format is '%s', expected '%s'"
                          % (src, fmt if fmt is not None else "(missing)", FORMAT_NAME))
        version = int(f.attrs.get("version", 0))
        if version < 1 or version > FORMAT_VERSION:
            raise Failure("checkpoint %s: format version %d is not supported (this program "
                          "reads up to %d)" % (src, version, FORMAT_VERSION))
        if int(f.attrs.get("complete", 0)) != 1:
            raise Failure("checkpoint %s: incomplete (its writer was interrupted)" % src)
        if "model" not in f:
            raise Failure("checkpoint %s: group /model is missing" % src)
        names = sorted(f["model"].keys(), key=state_order)
        # The checksum runs over the parameters, then the buffers (batch
        # norm's running statistics), then the momentum of each parameter.
        params = [n for n in names if not is_buffer(n)]
        buffers = [n for n in names if is_buffer(n)]
        arrays = {}
        h = FNV_OFFSET
        for name in params + buffers:
            arrays[name] = np.asarray(f["model"][name][()], dtype="<f4")
            h = checksum_update(h, arrays[name].reshape(-1))
        state = collections.OrderedDict((name, arrays[name]) for name in names)
        if int(f.attrs.get("has_momentum", 0)):
            mom = f.get("optimizer/momentum")
            if mom is None:
                raise Failure("checkpoint %s: group /optimizer/momentum is missing" % src)
            for name in params:
                h = checksum_update(h, np.asarray(mom[name][()], dtype="<f4"))
        if h != int(f.attrs.get("checksum", -1)):
            raise Failure("checkpoint %s: checksum mismatch (the file is corrupt)" % src)
    import torch  # only now: it takes a second to load
    # num_batches_tracked is a float32 scalar in our files, int64 in PyTorch's.
    state = collections.OrderedDict(
        (k, torch.tensor(int(v), dtype=torch.int64) if k.endswith("num_batches_tracked")
         else torch.from_numpy(v.copy())) for k, v in state.items())
    tmp = out + ".tmp"
    try:
        torch.save(state, tmp)
        os.replace(tmp, out)
    except (OSError, RuntimeError) as e:  # torch.save raises RuntimeError for a missing folder
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise Failure("%s: cannot write: %s" % (out, e))
    print("%s: %d tensors -> %s" % (src, len(state), out))


def main(argv):
    p = argparse.ArgumentParser(
        prog=PROG, description="torchvision AlexNet weights <-> alexnet-train checkpoints")
    p.add_argument("pth", nargs="?", help="a torchvision AlexNet state dict (.pth) to import")
    p.add_argument("-o", "--output", required=True, help="the checkpoint (.h5) or, with "
                   "--export, the state dict (.pth) to write")
    p.add_argument("--labels", help="class names, one per line, stored as /classes")
    p.add_argument("--input-size", type=int, default=224,
                   help="side of the network input stored in the checkpoint (default 224)")
    p.add_argument("--export", metavar="CKPT", help="write this checkpoint's weights as a "
                   "state dict instead")
    args = p.parse_args(argv)
    if bool(args.pth) == bool(args.export):
        p.error("give either a .pth file to import or --export CKPT")
    if args.input_size < 63:
        p.error("--input-size %d: AlexNet needs at least 63" % args.input_size)
    try:
        if args.export:
            export_checkpoint(args.export, args.output)
        else:
            import_torchvision(args.pth, args.output, args.labels, args.input_size)
    except Failure as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
