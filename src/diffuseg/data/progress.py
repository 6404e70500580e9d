"""The progress bar of a loop over the files or cases of a dataset (scans, file and header checks): shown on a
terminal (tqdm's ``disable=None``) once the loop has ``QUIET_BELOW`` items or more, so that a small dataset prints
nothing, and cleared when the loop ends."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeVar

QUIET_BELOW = 100  # a loop over fewer items shows no bar

T = TypeVar("T")


def progress(items: Sequence[T], desc: str, unit: str) -> Iterable[T]:
    """``items`` under a bar named ``desc`` that counts ``unit``s (module docstring)."""
    from tqdm import tqdm

    return tqdm(items, desc=desc, unit=unit, leave=False, disable=len(items) < QUIET_BELOW or None)
