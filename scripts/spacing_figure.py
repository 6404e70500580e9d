#!/usr/bin/env python
"""Draw docs/images/data-resize-spacing.png: one slice of anisotropic pixels as each ``data.resize`` gives it to the
network (a documentation figure, not a CI test).

    python scripts/spacing_figure.py DATA --out docs/images/data-resize-spacing.png

``DATA`` holds ``acdc/`` (the SSL4MIS HDF5 release of ACDC). None of the real data here has anisotropic in-plane
pixels (that ACDC release keeps no spacing at all), so one is made from a real slice: an ACDC short-axis slice, its
pixels taken as 1 mm squares, cropped to 160 x 208 mm and stored as NIfTI with its rows merged in pairs (2 x 1 mm
pixels, as a thick-row acquisition stores it). That file is read and resized by diffuseg's own code
(``open_dataset``, ``transforms.resize_pair`` with each ``transforms.Fit``) at ``data.image_size`` 128.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

SLICE = "acdc/data/patient010_frame01_slice_5.h5"
ROWS = slice(52, 212)  # 160 rows of the 256 around the heart; all 208 columns
PIXEL = (2.0, 1.0)  # mm per stored pixel (rows, columns) after merging rows in pairs
SIZE = 128  # data.image_size
COLOURS = {1: "#f4a261", 2: "#2a9d8f", 3: "#e9c46a"}  # RV, myocardium, LV
NAMES = {1: "RV", 2: "Myo", 3: "LV"}


def _anisotropic(data: Path, folder: Path) -> Path:
    """The ACDC slice cropped and stored with 2 x 1 mm pixels as a paired NIfTI dataset in ``folder``."""
    import h5py
    import nibabel as nib

    from diffuseg.data.transforms import resize_atoms

    with h5py.File(data / SLICE, "r") as f:
        image, label = f["image"][ROWS], f["label"][ROWS]
    shape = (image.shape[0] // 2, image.shape[1])
    merged = F.interpolate(torch.from_numpy(image)[None, None], size=shape, mode="bilinear", antialias=True)[0, 0]
    labels = resize_atoms(torch.from_numpy(label)[None], shape, 3)[0]
    affine = np.diag([*PIXEL, 8.0, 1.0])
    for sub, array in (("images", merged.numpy().astype(np.float32)), ("masks", labels.numpy().astype(np.uint8))):
        (folder / sub).mkdir(parents=True)
        nib.save(nib.Nifti1Image(array[..., None], affine), str(folder / sub / "slice.nii.gz"))
    return folder


def _lv_ratio(mask: np.ndarray, pixel: tuple[float, float] = (1.0, 1.0)) -> float:
    """Height over width of the left ventricle's bounding box, in units of ``pixel``."""
    rows, cols = np.nonzero(mask == 3)
    return float((np.ptp(rows) + 1) * pixel[0] / ((np.ptp(cols) + 1) * pixel[1]))


def _panel(ax, image: np.ndarray, mask: np.ndarray, title: str, box=None) -> None:
    ax.imshow(image, cmap="gray", interpolation="nearest")
    for value, colour in COLOURS.items():
        if (mask == value).any():
            ax.contour(mask == value, levels=[0.5], colors=colour, linewidths=1.2)
    if box is not None:
        top, left, h, w = box
        from matplotlib.patches import Rectangle

        ax.add_patch(Rectangle((left - 0.5, top - 0.5), w, h, fill=False, ec="white", ls="--", lw=0.8))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("data", type=Path, help="the folder holding acdc/")
    p.add_argument("--out", type=Path, default=Path("docs/images/data-resize-spacing.png"))
    args = p.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffuseg.data.formats import open_dataset
    from diffuseg.data.spacing import fitting_spacing
    from diffuseg.data.transforms import Fit, resize_pair
    from diffuseg.enums import Resize
    from diffuseg.labels import ClassSpec

    with tempfile.TemporaryDirectory() as tmp:
        classes = tuple(ClassSpec(name, (value,)) for value, name in NAMES.items())
        reader = open_dataset(_anisotropic(args.data, Path(tmp)), "paired", classes=classes)
        case = reader[0]
        target = fitting_spacing(reader, [0], SIZE)
        fits = {
            "stretch": Fit(Resize.STRETCH),
            "pad": Fit(Resize.PAD),
            f"spacing\n(data.spacing [], found: {target[0]:g} x {target[1]:g} mm)": Fit(Resize.SPACING, target),
        }
        height, width = case.geometry.size
        true = _lv_ratio(case.masks[0].numpy(), PIXEL)
        fig, axes = plt.subplots(1, 4, figsize=(12.4, 3.9), gridspec_kw={"width_ratios": [1.7, 1, 1, 1]})
        stored = f"as stored: {height} x {width} pixels\nof {PIXEL[0]:g} x {PIXEL[1]:g} mm (rows x columns)"
        _panel(axes[0], case.image[0].numpy(), case.masks[0].numpy(), stored)
        axes[0].set_xlabel(f"LV height / width: {_lv_ratio(case.masks[0].numpy()):.2f} (in mm: {true:.2f})", fontsize=9)
        for ax, (name, fit) in zip(axes[1:], fits.items()):
            image, mask = resize_pair(case.image, case.masks, SIZE, 3, fit, case.geometry)
            box = fit.box(height, width, SIZE, case.geometry) if fit.mode != Resize.STRETCH else None
            _panel(ax, image[0].numpy(), mask[0].numpy(), f"data.resize: {name}", box)
            ax.set_xlabel(f"LV height / width: {_lv_ratio(mask[0].numpy()):.2f}", fontsize=9)
    handles = [plt.Line2D([], [], color=c, lw=1.5, label=NAMES[v]) for v, c in COLOURS.items()]
    handles.append(plt.Line2D([], [], color="black", ls="--", lw=0.8, label="image part (Fit.box)"))
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.suptitle(
        f"An ACDC slice stored with 2 x 1 mm pixels, and the {SIZE} x {SIZE} input each data.resize makes of it",
        fontsize=10,
    )
    fig.tight_layout(rect=(0, 0.06, 1, 0.97))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
