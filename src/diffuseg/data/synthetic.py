"""Procedural ambiguous data whose distribution of annotator masks is known exactly.

Case ``i`` shows a bright disc (the "lesion") of radius ``r`` at a random centre on a noisy background.
Its visibility (contrast) is one of ``spec.probabilities``, and an annotator marks the lesion with exactly
that probability ``p``: faint lesions are marked by few annotators, clear ones by all. An annotator who
marks it draws the boundary as a disc of radius ``r + d`` with ``d`` uniform over
``(-spec.radius_jitter, 0, +spec.radius_jitter)``. So the true distribution of masks of a case is
``{empty: 1 - p, disc(r + d): p / 3 for each d}`` (``true_distribution``), and a generative model's samples
can be scored against it exactly (e.g. GED against the enumerated modes with their probabilities).
All randomness comes from generators seeded from (seed, case) and (seed, case, annotator).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from diffuseg.data.case import Case, Geometry
from diffuseg.data.dataset import item_generator


@dataclass(frozen=True)
class SyntheticSpec:
    size: int = 32
    annotators: int = 4
    probabilities: tuple[float, ...] = (0.25, 0.5, 0.75, 1.0)
    radius_range: tuple[float, float] = (0.15, 0.25)  # lesion radius as a fraction of the side
    radius_jitter: int = 2  # pixels
    noise: float = 0.05  # background noise standard deviation


@dataclass(frozen=True)
class _Layout:
    cy: float
    cx: float
    radius: float
    p: float


def _layout(index: int, spec: SyntheticSpec, seed: int) -> _Layout:
    g = item_generator(seed, 0, index)
    u = torch.rand(4, generator=g, dtype=torch.float64).tolist()
    lo, hi = spec.radius_range
    radius = max(spec.size * (lo + (hi - lo) * u[0]), spec.radius_jitter + 1.5)  # the smallest mode is non-empty
    margin = radius + spec.radius_jitter + 1
    cy = margin + (spec.size - 2 * margin) * u[1]
    cx = margin + (spec.size - 2 * margin) * u[2]
    p = spec.probabilities[min(int(u[3] * len(spec.probabilities)), len(spec.probabilities) - 1)]
    return _Layout(cy, cx, radius, p)


def _disc(spec: SyntheticSpec, lay: _Layout, radius: float) -> np.ndarray:
    yy, xx = np.mgrid[: spec.size, : spec.size]
    return (((yy + 0.5 - lay.cy) ** 2 + (xx + 0.5 - lay.cx) ** 2) <= radius**2).astype(np.uint8)


def true_distribution(
    index: int, spec: SyntheticSpec = SyntheticSpec(), seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """The exact mask distribution of case ``index``: modes (M,H,W) uint8 and probabilities (M,) float64."""
    lay = _layout(index, spec, seed)
    jitters = (-spec.radius_jitter, 0, spec.radius_jitter)
    modes = [np.zeros((spec.size, spec.size), np.uint8)] + [_disc(spec, lay, lay.radius + d) for d in jitters]
    probs = [1.0 - lay.p] + [lay.p / 3.0] * 3
    return torch.from_numpy(np.stack(modes)), torch.tensor(probs, dtype=torch.float64)


def synthetic_case(index: int, spec: SyntheticSpec = SyntheticSpec(), seed: int = 0) -> Case:
    """Case ``index``: image (1,S,S) float32 in [0,1], masks (A,S,S) drawn from ``true_distribution``."""
    lay = _layout(index, spec, seed)
    g = item_generator(seed, 1, index)
    noise = torch.randn((spec.size, spec.size), generator=g, dtype=torch.float64).numpy() * spec.noise
    image = 0.3 + noise + 0.5 * lay.p * _disc(spec, lay, lay.radius)
    modes, probs = true_distribution(index, spec, seed)
    draws = [
        int(torch.multinomial(probs, 1, generator=item_generator(seed, 2 + k, index))) for k in range(spec.annotators)
    ]
    masks = modes[draws]
    geometry = Geometry(size=(spec.size, spec.size), format="png", layout="synthetic")
    img = torch.from_numpy(np.clip(image, 0.0, 1.0).astype(np.float32))[None]
    return Case(img, masks.clone(), f"synth_{index:04d}", f"synth_{index:04d}", geometry, {"p": lay.p})


def write_synthetic(
    root: str | os.PathLike, n: int, spec: SyntheticSpec = SyntheticSpec(), seed: int = 0, layout: str = "lidc"
) -> Path:
    """Write ``n`` cases as 8-bit PNGs; returns ``root``.

    Args:
        root: the dataset folder (created).
        n: the number of cases, ``synthetic_case(0..n-1)``.
        spec: the data's sizes and probabilities.
        seed: the seed of every draw.
        layout: ``lidc`` (one nodule per patient) or ``multi`` (``images/`` + ``masks_<k>/`` per annotator k).
    """
    from PIL import Image

    root = Path(root)
    for i in range(n):
        case = synthetic_case(i, spec, seed)
        image = (case.image[0].numpy() * 255).round().astype(np.uint8)
        masks = [m.numpy() * 255 for m in case.masks]
        if layout == "lidc":
            folder = root / f"SYN-{i:04d}" / "nodule-0"
            files = [(folder / "images" / "slice-0.png", image)]
            files += [(folder / f"mask-{k}" / "slice-0.png", m) for k, m in enumerate(masks)]
        elif layout == "multi":
            files = [(root / "images" / f"{case.case_id}.png", image)]
            files += [(root / f"masks_{k}" / f"{case.case_id}.png", m) for k, m in enumerate(masks)]
        else:
            raise ValueError(f"{layout!r} is not one of: lidc, multi")
        for path, array in files:
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array.astype(np.uint8)).save(path)
    return root
