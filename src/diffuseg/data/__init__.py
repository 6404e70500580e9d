"""Data: readers per layout (``formats``), checks (``verify``), the training dataset and synthetic data."""

from pathlib import Path


def demo_lidc_root() -> Path:
    """The bundled LIDC subset (22 patients, 246 slices, 4 annotators) in the LIDC-IDRI-slices layout."""
    return Path(__file__).resolve().parents[1] / "demo_data" / "lidc"
