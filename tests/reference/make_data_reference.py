#!/usr/bin/python3
"""Writes tests/reference/data_reference.h5 for tests/test_data_jpeg.c:

- /image (H, W, 3) uint8: a test picture (smooth gradients, edges, noise);
- /jpeg: PIL's JPEG of it (quality 90) and /jpeg_pil: PIL's decode of those
  bytes (PIL uses libjpeg-turbo, as data/ does);
- torchvision 0.14's RandomResizedCrop (scale (0.08, 1), ratio (3/4, 4/3),
  bilinear on PIL images) for several seeds and picture sizes: the random
  draws torchvision made (/rrc_area: the area fraction of each try,
  /rrc_aspect: its aspect ratio, /rrc_tries: how many tries it made), the box
  it chose (/rrc_box: top, left, height, width) and its output
  (/rrc_out: (S, S, 3)); /rrc_src says which picture (0 = /image, 1 = /thin,
  a picture too thin for any try, so the centre fallback is taken).

Run: /usr/bin/python3 tests/reference/make_data_reference.py
"""
import io
import math
import os

import h5py
import numpy as np
import torch
import torchvision
import torchvision.transforms.functional as F
from PIL import Image
from torchvision.transforms import RandomResizedCrop, InterpolationMode

S = 24  # output side


def picture(h, w, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = 128 + 100 * np.sin(x / 7.0) * np.cos(y / 11.0)
    g = 255 * x / max(w - 1, 1)
    b = np.where((x // 9 + y // 9) % 2 == 0, 40, 210).astype(np.float64)
    img = np.stack([r, g, b], -1) + rng.normal(0, 12, (h, w, 3))
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def draws(seed, h, w):
    """Replays RandomResizedCrop.get_params's generator calls: the draws of
    each try until one fits, as torchvision 0.14 makes them."""
    scale, ratio = (0.08, 1.0), (3.0 / 4.0, 4.0 / 3.0)
    torch.manual_seed(seed)
    area = h * w
    log_ratio = torch.log(torch.tensor(ratio))
    areas, aspects = [], []
    for _ in range(10):
        a = torch.empty(1).uniform_(scale[0], scale[1]).item()
        r = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1])).item()
        areas.append(a)
        aspects.append(r)
        tw = int(round(math.sqrt(area * a * r)))
        th = int(round(math.sqrt(area * a / r)))
        if 0 < tw <= w and 0 < th <= h:
            torch.randint(0, h - th + 1, size=(1,))
            torch.randint(0, w - tw + 1, size=(1,))
            break
    n = len(areas)
    areas += [0.5] * (10 - n)
    aspects += [1.0] * (10 - n)
    return areas, aspects, n


def main():
    assert torchvision.__version__.startswith("0.14"), torchvision.__version__
    image = picture(45, 61, 1)
    thin = picture(200, 9, 2)
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    jpeg = np.frombuffer(buf.getvalue(), np.uint8)
    jpeg_pil = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))

    t = RandomResizedCrop(S, interpolation=InterpolationMode.BILINEAR)
    src, areas, aspects, tries, boxes, outs = [], [], [], [], [], []
    for k, (which, pic) in enumerate([(0, image)] * 12 + [(1, thin)] * 2):
        seed = 1000 + k
        h, w = pic.shape[:2]
        a, r, n = draws(seed, h, w)
        torch.manual_seed(seed)
        i, j, bh, bw = t.get_params(Image.fromarray(pic), t.scale, t.ratio)
        out = F.resized_crop(Image.fromarray(pic), i, j, bh, bw, [S, S],
                             InterpolationMode.BILINEAR)
        src.append(which)
        areas.append(a)
        aspects.append(r)
        tries.append(n)
        boxes.append([i, j, bh, bw])
        outs.append(np.asarray(out))

    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data_reference.h5")
    with h5py.File(path, "w", track_order=False) as f:
        f["image"] = image
        f["thin"] = thin
        f["jpeg"] = jpeg
        f["jpeg_pil"] = jpeg_pil
        f["rrc_src"] = np.array(src, np.int32)
        f["rrc_area"] = np.array(areas, np.float64)
        f["rrc_aspect"] = np.array(aspects, np.float64)
        f["rrc_tries"] = np.array(tries, np.int32)
        f["rrc_box"] = np.array(boxes, np.int32)
        f["rrc_out"] = np.stack(outs).astype(np.uint8)
        f.attrs["torchvision"] = torchvision.__version__
    print("wrote", path)


if __name__ == "__main__":
    main()
