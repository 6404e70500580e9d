"""The figures of the report's "Is the uncertainty useful?" section (matplotlib, Agg): the risk-coverage curve
with its random and optimal references beside the reliability diagram in equal-mass bins, and per shown case the
error pixels beside the members' disagreement map."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure

from diffuseg.evaluation.figures import PRED_COLOUR, _crop_box, save_figure

MODEL_COLOUR, OPTIMAL_COLOUR, RANDOM_COLOUR = "#4c72b0", "#2ca02c", "#7f7f7f"
DISAGREEMENT_LABEL = "share of members that disagree with the fused mask"


def _fmt(value) -> str:
    return "undefined" if value is None else f"{value:.3f}"


def usefulness_figure(block: dict, path: Path) -> Path:
    """Left: the risk-coverage curve of ``block["failure"]`` (mean ``1 - Dice`` of the cases kept, least uncertain
    first) with the optimal order and the random one (the mean risk). Right: the reliability diagram of
    ``block["calibration"]["bins"]`` (equal-mass bins of the marked pixels) with the diagonal."""
    failure, calibration = block["failure"], block["calibration"]
    fig = Figure(figsize=(10.5, 4.0), dpi=110, layout="constrained")
    rc, rel = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    curve = failure["curve"]
    if curve["coverage"]:
        marker = "o" if len(curve["coverage"]) <= 40 else None
        rc.plot(
            curve["coverage"],
            curve["risk"],
            color=MODEL_COLOUR,
            linewidth=2,
            marker=marker,
            markersize=3,
            label=f"ranked by uncertainty (AURC {_fmt(failure['aurc'])})",
        )
        rc.plot(
            curve["coverage"],
            curve["optimal"],
            color=OPTIMAL_COLOUR,
            linestyle="--",
            label=f"optimal: ranked by 1 - Dice ({_fmt(failure['aurc_optimal'])})",
        )
        rc.axhline(
            failure["aurc_random"],
            color=RANDOM_COLOUR,
            linestyle=":",
            label=f"random order ({_fmt(failure['aurc_random'])})",
        )
        rc.legend(fontsize=8, loc="best")
    rc.set(
        xlabel="coverage: share of cases kept (least uncertain first)",
        ylabel="mean 1 - Dice of the kept cases",
        xlim=(0, 1),
        ylim=(0, 1.02),
    )
    rc.set_title(f"Risk-coverage over {failure['cases']} cases", fontsize=10)
    rel.plot([0, 1], [0, 1], color=RANDOM_COLOUR, linestyle="--", linewidth=1, label="perfect calibration")
    bins = np.asarray(calibration["bins"], dtype=float).reshape(-1, 3)
    if len(bins):
        rel.plot(
            bins[:, 1] / bins[:, 0],
            bins[:, 2] / bins[:, 0],
            marker="o",
            color=MODEL_COLOUR,
            label=f"{len(bins)} bins of equal pixel count (ECE {_fmt(calibration['ece_marked'])})",
        )
    else:
        rel.text(0.5, 0.5, "no member marks any pixel", ha="center", va="center", fontsize=9)
    rel.set(
        xlabel="share of members marking the pixel",
        ylabel="share of annotators marking it",
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),
        aspect="equal",
    )
    rel.set_title(f"Reliability over the {calibration['marked_pixels']:,} pixels some member marks", fontsize=10)
    rel.legend(fontsize=8, loc="upper left")
    save_figure(fig, path)
    return path


def error_figure(image: np.ndarray, error: np.ndarray, uncertainty: np.ndarray, path: Path) -> Path:
    """Two panels over the image ``(H, W)``, cropped around what is marked: the error pixels ``error`` ``(H, W)``
    bool (fused mask against the annotators' majority) in red, and the disagreement map ``uncertainty`` ``(H,
    W)`` in [0, 1] with the error pixels outlined."""
    box = _crop_box([error, uncertainty > 0], image.shape)
    image, error, uncertainty = image[box], error[box], uncertainty[box]
    fig = Figure(figsize=(5.4, 3.0), dpi=100, layout="constrained")
    left, right = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
    for ax in (left, right):
        ax.imshow(image, cmap="gray", interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
    left.imshow(
        np.ma.masked_where(~error, error.astype(float)),
        cmap=ListedColormap([PRED_COLOUR]),
        alpha=0.7,
        interpolation="nearest",
        vmin=0,
        vmax=1,
    )
    left.set_title(f"errors ({int(error.sum())} pixels)", fontsize=9)
    shown = np.ma.masked_where(uncertainty <= 0, uncertainty)
    im = right.imshow(shown, cmap="inferno", alpha=0.85, vmin=0, vmax=1, interpolation="nearest")
    if error.any():
        right.contour(error.astype(float), levels=[0.5], colors=["#00e5ff"], linewidths=0.8)
    right.set_title("disagreement, errors outlined", fontsize=9)
    bar = fig.colorbar(im, ax=right, orientation="horizontal", fraction=0.07, pad=0.03, ticks=[0, 0.5, 1])
    bar.set_label(DISAGREEMENT_LABEL, fontsize=7)
    bar.ax.tick_params(labelsize=7)
    save_figure(fig, path)
    return path
