"""The report's figures (matplotlib, Agg): per-case distributions and one figure per chosen case (the
uncertainty section's are in ``uncertainty_figures``).

NIfTI slices are drawn as a viewer shows them (``viewer_view``): from the affine, the plane's rows run from
anterior (axial) or superior (coronal, sagittal) down, its columns from the patient's right to left (radiological
convention; sagittal: anterior to posterior), with the orientation letters at the image's edges. Other formats
(PNG, HDF5) carry no orientation and are drawn as stored.

Colours: annotators in ``ANNOTATOR_COLOURS``, a binary prediction in ``PRED_COLOUR``; with several classes
class c in ``CLASS_COLOURS[c]`` (matplotlib's tab10 order without its red, kept for the binary prediction, then
tab20's light tones without its light red, so that 18 classes have distinct colours),
in every overlay and in the report's legend and tables.
"""

from __future__ import annotations

import math
import os
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from diffuseg.data.case import Case
from diffuseg.enums import Uncertainty
from diffuseg.evaluation.headline import UNCERTAINTY_KINDS
from diffuseg.files import atomic_path
from diffuseg.inference.outputs import PredictionFiles, read_mask, read_uncertainty
from diffuseg.inference.uncertainty import disagreement, map_kind
from diffuseg.labels import LabelScheme

CLASS_COLOURS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
    "#c5b0d5",
    "#c49c94",
    "#f7b6d2",
    "#c7c7c7",
    "#dbdb8d",
    "#9edae5",
)
ANNOTATOR_COLOURS = ("#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b")
PRED_COLOUR = "#d62728"
DISTRIBUTION_ORDER = (
    "dice",
    "iou",
    "hd95",
    "ged",
    "ged_biased",
    "ged_16",
    "ged_biased_16",
    "sample_dice",
    "diversity",
    "hungarian_iou",
    "ci",
    "ncc",
    "ece",
    "dice_majority",
)
"""The metrics whose per-case distribution is drawn, in this order (those some case defines)."""


def class_colour(c: int) -> str:
    return CLASS_COLOURS[c % len(CLASS_COLOURS)]


@dataclass(frozen=True)
class View:
    """How a stored plane ``(..., rows, cols)`` is drawn: transposed, then rows and/or columns reversed; ``edges``:
    the orientation letters at the top, bottom, left and right of the drawn plane (None: unknown)."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False
    edges: tuple[str, str, str, str] | None = None

    def __call__(self, plane: np.ndarray) -> np.ndarray:
        out = np.swapaxes(plane, -1, -2) if self.transpose else plane
        if self.flip_rows:
            out = out[..., ::-1, :]
        if self.flip_cols:
            out = out[..., ::-1]
        return np.ascontiguousarray(out)


_POSITIVE, _NEGATIVE = "RAS", "LPI"  # the letter at the positive and the negative end of each RAS world axis


def viewer_view(affine) -> View:
    """The ``View`` of a NIfTI plane cut along voxel axis 2 (``formats.base``: stored ``(X, Y)``, voxel axes 0
    and 1) with the 4x4 ``affine``, as a viewer draws it (radiological convention): each voxel axis is matched to
    its closest world axis (nibabel ``io_orientation``); rows follow the in-plane world axis of the larger RAS
    index (A for an axial plane, S for coronal and sagittal ones) and columns the other (R, or A for a sagittal
    plane), both running towards the negative end (P or I downwards; L, or P for sagittal, to the right), so the
    patient's right is on the left of an axial or coronal plane. ``View()`` (as stored) without an affine."""
    if affine is None:
        return View()
    from nibabel.orientations import io_orientation

    ornt = io_orientation(np.asarray(affine, dtype=np.float64))
    (w0, d0), (w1, d1) = ornt[0], ornt[1]
    transpose = w1 > w0
    (wr, dr), (wc, dc) = ((w1, d1), (w0, d0)) if transpose else ((w0, d0), (w1, d1))
    wr, wc = int(wr), int(wc)
    edges = (_POSITIVE[wr], _NEGATIVE[wr], _POSITIVE[wc], _NEGATIVE[wc])
    return View(transpose, bool(dr > 0), bool(dc > 0), edges)


def save_figure(fig, path: str | os.PathLike) -> None:
    """``fig.savefig`` through ``atomic_path`` (temp file with the umask's mode, then rename); the format is
    taken from ``path``'s ending."""
    path = Path(path)
    with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp:
        fig.savefig(tmp, format=path.suffix.lstrip(".") or None)


def distribution_figure(rows: list[dict], path: Path) -> Path | None:
    """One small panel per metric: a histogram of its per-case values with the mean marked."""
    names = [n for n in DISTRIBUTION_ORDER if any(isinstance(r.get(n), (int, float)) for r in rows)]
    if not names:
        return None
    cols = min(4, len(names))
    nrows = math.ceil(len(names) / cols)
    fig = Figure(figsize=(3.6 * cols, 2.6 * nrows), dpi=110, layout="constrained")
    for i, name in enumerate(names):
        ax = fig.add_subplot(nrows, cols, i + 1)
        values = np.array([r[name] for r in rows if isinstance(r.get(name), (int, float))], dtype=float)
        lo, hi = float(values.min()), float(values.max())
        if hi - lo < 1e-9:  # one value: a single bar around it
            lo, hi = lo - 0.5, hi + 0.5
        bins = min(30, max(5, len(values) // 3))
        ax.hist(values, bins=bins, range=(lo, hi), color="#4c72b0", edgecolor="white")
        ax.axvline(values.mean(), color=PRED_COLOUR, linewidth=1.5)
        ax.set_title(f"{name}  (mean {values.mean():.3f}, n={len(values)})", fontsize=9)
        ax.tick_params(labelsize=8)
    save_figure(fig, path)
    return path


def case_figure(
    case: Case,
    files: PredictionFiles,
    slice_index: int | None,
    max_samples: int,
    path: Path,
    kind: str | None,
    scheme: LabelScheme,
) -> None:
    """Image | each annotator | fused | uncertainty (with its colour bar) on the first row, the samples after
    them when all fit in one row of 8, else on the rows below; each overlaid on the image.

    Args:
        case: the ground-truth case (image and annotators).
        files: its prediction files.
        slice_index: its plane in a predicted volume (None: a 2D file).
        max_samples: the most samples drawn.
        path: the PNG written.
        kind: the prediction's ``sample.uncertainty`` (None: not recorded).
        scheme: the label scheme; binary masks are drawn in the panel's colour, classes each in its colour
            with the legend below.
    """
    view = viewer_view(case.geometry.affine)
    image = view(case.image[0].numpy() if case.image.shape[0] == 1 else case.image.mean(0).numpy())
    masks = view(case.masks.numpy())
    fused = view(read_mask(files.fused, scheme, slice_index))
    every_sample = [view(read_mask(p, scheme, slice_index)) for p in files.samples]
    uncertainty = _uncertainty(files, slice_index, every_sample, fused, view)
    # without a written map, the members' disagreement with the fused mask is computed here
    kind = str(Uncertainty.DISAGREEMENT) if files.uncertainty is None else map_kind(kind, scheme.binary)
    box = _crop_box([m != 0 for m in (*masks, fused, *every_sample)], image.shape)
    image, masks, fused = image[box], masks[(slice(None), *box)], fused[box]
    samples = [m[box] for m in every_sample[:max_samples]]
    first: list[tuple[str, np.ndarray | None, str | None]] = [("image", None, None)]
    first += [(f"annotator {i + 1}", m, ANNOTATOR_COLOURS[i % len(ANNOTATOR_COLOURS)]) for i, m in enumerate(masks)]
    first.append(("fused", fused, PRED_COLOUR))
    after = [(f"sample {i + 1}", s, PRED_COLOUR) for i, s in enumerate(samples)]
    slots = len(first) + (uncertainty is not None)
    one_row = slots + len(after) <= 8
    cols = slots + len(after) if one_row else max(slots, min(len(after), 8))
    sample_rows = 0 if one_row else math.ceil(len(after) / cols)
    bar = 0.35 * (uncertainty is not None)
    fig = Figure(figsize=(2.0 * cols, 2.15 * (1 + sample_rows) + bar), dpi=100, layout="constrained")
    # the samples' rows in a subfigure of their own, so the colour bar does not resize their columns
    top, rest = (fig, None) if one_row else fig.subfigures(2, 1, height_ratios=[2.15 + bar, 2.15 * sample_rows])
    placed = [(top, 1, i, panel) for i, panel in enumerate(first)]
    placed += [(top, 1, slots + i, p) if one_row else (rest, sample_rows, i, p) for i, p in enumerate(after)]
    for where, rows, slot, (title, mask, colour) in placed:
        ax = where.add_subplot(rows, cols, slot + 1)
        ax.imshow(image, cmap="gray", interpolation="nearest")
        if mask is not None and mask.shape == image.shape:
            overlay_atoms(ax, mask, scheme, colour)
            if title == "fused" and scheme.binary:
                for m, c in zip(masks, ANNOTATOR_COLOURS):
                    ax.contour(m.astype(float), levels=[0.5], colors=[c], linewidths=0.8)
        _tidy(ax, title if mask is None or mask.any() else f"{title} (empty)")
        if mask is None and view.edges is not None:
            _orientation_letters(ax, view.edges)
    if uncertainty is not None:
        _uncertainty_panel(top.add_subplot(1, cols, len(first) + 1), top, image, uncertainty[box], kind)
    if not scheme.binary:
        figure_legend(fig, scheme)
    save_figure(fig, path)


def _uncertainty_panel(ax, fig, image: np.ndarray, uncertainty: np.ndarray, kind: str | None) -> None:
    """The uncertainty map over the image with a colour bar over its full range (what it is, in its units)."""
    _, label, top = UNCERTAINTY_KINDS.get(kind or "", ("", "kind not recorded (no config.yaml)", 0.0))
    top = top or max(float(uncertainty.max()), 1e-6)
    ax.imshow(image, cmap="gray", interpolation="nearest")
    shown = np.ma.masked_where(uncertainty <= 0, uncertainty)
    im = ax.imshow(shown, cmap="inferno", alpha=0.85, vmin=0, vmax=top, interpolation="nearest")
    _tidy(ax, f"uncertainty (max {max(0.0, float(uncertainty.max())):.2f})")
    bar = fig.colorbar(im, ax=ax, orientation="horizontal", fraction=0.07, pad=0.03, ticks=[0, top / 2, top])
    bar.set_label(label, fontsize=8)
    bar.ax.tick_params(labelsize=8)


def _crop_box(masks: list[np.ndarray], shape: tuple[int, ...], min_size: int = 48) -> tuple[slice, slice]:
    """A square window around everything any mask marks, with a margin, so small lesions are visible;
    the whole image when nothing is marked or the window would cover most of it."""
    whole = (slice(0, shape[0]), slice(0, shape[1]))
    marked = np.zeros(shape, bool)
    for m in masks:
        if m.shape == shape:
            marked |= m
    if not marked.any():
        return whole
    rows, cols = np.nonzero(marked)
    side = max(min_size, int(1.6 * max(np.ptp(rows) + 1, np.ptp(cols) + 1)))
    if side >= 0.75 * min(shape):
        return whole
    centre = ((rows.min() + rows.max()) // 2, (cols.min() + cols.max()) // 2)
    starts = [int(np.clip(c - side // 2, 0, n - side)) for c, n in zip(centre, shape)]
    return slice(starts[0], starts[0] + side), slice(starts[1], starts[1] + side)


def _orientation_letters(ax, edges: tuple[str, str, str, str]) -> None:
    """The orientation letters (top, bottom, left, right) inside the edges of ``ax``."""
    style = {"color": "#ffd84d", "fontsize": 8, "fontweight": "bold", "transform": ax.transAxes}
    for letter, (x, y, ha, va) in zip(
        edges, ((0.5, 0.98, "center", "top"), (0.5, 0.02, "center", "bottom"), (0.02, 0.5, "left", "center"),
                (0.98, 0.5, "right", "center"))
    ):  # fmt: skip
        ax.text(x, y, letter, ha=ha, va=va, **style)


TITLE_CHARS = 24
"""A panel title wraps after this many characters, so a 2-inch panel never cuts it."""


def _tidy(ax, title: str) -> None:
    ax.set_title(textwrap.fill(title, TITLE_CHARS), fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])


def _uncertainty(
    files: PredictionFiles, slice_index: int | None, samples: list[np.ndarray], fused: np.ndarray, view: View
) -> np.ndarray | None:
    """The saved uncertainty map, drawn by ``view``; else the share of the samples (atom maps, already drawn by
    ``view``) that differ from the fused mask."""
    if files.uncertainty is not None:
        return view(read_uncertainty(files.uncertainty, slice_index))
    if len(samples) > 1:
        return disagreement(torch.from_numpy(np.stack(samples)), torch.from_numpy(fused)).numpy()
    return None


def overlay_mask(ax, mask: np.ndarray, colour: str, alpha: float = 0.45) -> None:
    """The boolean ``mask`` (H,W) filled in ``colour`` over what ``ax`` shows, and outlined when not empty."""
    ax.imshow(
        np.ma.masked_where(~mask, mask.astype(float)),
        cmap=ListedColormap([colour]),
        alpha=alpha,
        interpolation="nearest",
        vmin=0,
        vmax=1,
    )
    if mask.any():
        ax.contour(mask.astype(float), levels=[0.5], colors=[colour], linewidths=1.0)


def overlay_atoms(ax, atoms: np.ndarray, scheme: LabelScheme, colour: str) -> None:
    """The atom map ``atoms`` (H,W) over what ``ax`` shows: binary, its mask in ``colour``; several classes,
    each class filled and outlined in its own colour (regions overlap)."""
    masks = scheme.class_masks(torch.from_numpy(np.asarray(atoms).astype(np.int64))).numpy()
    if scheme.binary:
        overlay_mask(ax, masks[0], colour)
        return
    for c, mask in enumerate(masks):
        if mask.any():
            overlay_mask(ax, mask, class_colour(c), alpha=0.4)


def figure_legend(fig, scheme: LabelScheme) -> None:
    """A legend of the class colours below the panels."""
    handles = [Patch(facecolor=class_colour(c), label=n) for c, n in enumerate(scheme.names)]
    size = 9  # points
    entry = (0.6 * size * max(len(n) for n in scheme.names) + 4 * size) / 72  # inches: text, patch and gaps
    per_row = max(1, int(fig.get_figwidth() / entry))  # so that a row never leaves the figure
    columns = math.ceil(len(handles) / math.ceil(len(handles) / per_row))
    fig.legend(handles=handles, loc="outside lower center", ncol=columns, fontsize=size, frameon=False)
