"""Raters for the fusion tests: disagreeing but plausible masks and label maps of one truth."""

from __future__ import annotations

import numpy as np


def binary_raters(rng: np.random.Generator, r: int, size: int, flip: float) -> np.ndarray:
    """``r`` jittered ellipses with a few flipped pixels: disagreeing but plausible raters."""
    yy, xx = np.mgrid[:size, :size]
    out = []
    for _ in range(r):
        cx, cy = size / 2 + rng.normal(0, size / 40, 2)
        rx, ry = size / 5 + rng.normal(0, size / 50, 2)
        m = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 <= 1
        out.append(m ^ (rng.random((size, size)) < flip))
    return np.stack(out).astype(np.uint8)


def label_raters(rng: np.random.Generator, r: int, size: int, labels: int, flip: float) -> np.ndarray:
    """``r`` label maps (R, size, size) of one truth (a disc per label), each disc jittered, and a fraction
    ``flip`` of pixels set to a random label: raters that disagree as real ones do."""
    yy, xx = np.mgrid[:size, :size]
    centres = size * (0.25 + 0.5 * rng.random((labels, 2)))
    radii = size / 8 * (1 + rng.random(labels))
    out = []
    for _ in range(r):
        m = np.zeros((size, size), np.int64)
        for label in range(labels):
            c = centres[label] + rng.normal(0, size / 40, 2)
            rad = radii[label] + rng.normal(0, size / 60)
            m[(xx - c[0]) ** 2 + (yy - c[1]) ** 2 <= rad**2] = label + 1
        noise = rng.random((size, size)) < flip
        m[noise] = rng.integers(0, labels + 1, int(noise.sum()))
        out.append(m)
    return np.stack(out)
