"""A tiny LIDC-layout dataset on disk (PNG, 4 annotators) for training tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def make_lidc_like(root: Path, patients: int = 4, slices: int = 3, size: int = 16, seed: int = 0) -> Path:
    """``root/LIDC-IDRI-slices/LIDC-IDRI-000p/nodule-0/{images,mask-0..3}/slice-s.png``: a bright disc of
    radius r in the image; annotator k marks a disc of radius r + k - 1 (annotator 0 marks nothing on odd
    slices), so the annotators disagree in a known way."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    for p in range(patients):
        nodule = root / "LIDC-IDRI-slices" / f"LIDC-IDRI-{p:04d}" / "nodule-0"
        for s in range(slices):
            cy, cx = rng.integers(size // 4, 3 * size // 4, 2)
            r = int(rng.integers(2, size // 4))
            dist = np.hypot(yy - cy, xx - cx)
            image = np.clip(0.2 + 0.6 * (dist <= r) + 0.1 * rng.standard_normal((size, size)), 0, 1)
            (nodule / "images").mkdir(parents=True, exist_ok=True)
            Image.fromarray((image * 255).astype(np.uint8)).save(nodule / "images" / f"slice-{s}.png")
            for k in range(4):
                mask = (dist <= r + k - 1) & ~(k == 0 and s % 2 == 1)
                (nodule / f"mask-{k}").mkdir(exist_ok=True)
                Image.fromarray((mask * 255).astype(np.uint8)).save(nodule / f"mask-{k}" / f"slice-{s}.png")
    return root


TINY_NET = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}"


def tiny_overrides(data: Path, out: Path, steps: int = 6, ckpt_every: int = 3) -> list[str]:
    return [
        f"data.root={data}",
        f"train.out_dir={out}",
        "data.image_size=16",
        "data.augment=true",
        TINY_NET,
        f"train.steps={steps}",
        f"train.ckpt_every={ckpt_every}",
        "train.val_every=0",
        "train.log_every=1",
        "train.warmup_steps=2",
        "train.decay_steps=2",
        "train.batch_size=4",
        "sample.steps=2",
    ]
