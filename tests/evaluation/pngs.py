"""Tiny PNG masks for the evaluation tests: a writer and a disc."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def png(path: Path, array: np.ndarray) -> None:
    """``array`` as 8-bit PNG ``path``, its folder made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def disk(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    """A ``size`` x ``size`` uint8 mask, 1 inside the circle of centre ``(cy, cx)`` and radius ``r``."""
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)
