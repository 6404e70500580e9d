"""The report's parts for several classes: a colour and a legend per class, per-class tables, class overlays.

``results.json`` of a run with several classes holds ``classes`` and ``class_names`` (``evaluate``); a binary
one holds neither and its report is unchanged. Class k gets ``CLASS_COLOURS[k]`` (matplotlib's tab10 order
without its red, which the report keeps for the binary prediction), in the legend, the tables and every overlay.
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from diffuseg.labels import LabelScheme, label_scheme

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
)
# The per-class metrics the class table shows first, in this order (then any other per-class metric).
CLASS_METRICS = ("dice", "iou", "hd95", "ged", "ged_biased", "sample_dice", "diversity", "ece_foreground")
_LOWER_BETTER = ("hd95", "ged", "ece", "diversity")


def scheme_of(results: dict[str, Any]) -> LabelScheme | None:
    """The classes ``results.json`` was scored with; None for a binary run (no ``classes`` key)."""
    classes = results.get("classes")
    return label_scheme(classes, where=f"{results.get('pred', 'results.json')}: classes") if classes else None


def class_colour(k: int) -> str:
    return CLASS_COLOURS[k % len(CLASS_COLOURS)]


def legend_html(names: tuple[str, ...] | list[str], regions: bool = False) -> str:
    """One swatch per class, in its colour (hex code as the title), as the overlays draw it."""
    items = "".join(
        f"<span class='class-item'><span class='swatch' style='background:{class_colour(k)}' "
        f"title='{class_colour(k)}'></span>{html.escape(name)}</span>"
        for k, name in enumerate(names)
    )
    kind = "regions (overlapping; scored on the region masks)" if regions else "classes"
    return f"<div class='legend'><b>{kind}:</b> {items}</div>"


def class_table(summary: dict, names: list[str], title: str) -> str:
    """Rows: the classes and their mean; columns: the per-class metrics (mean ± std over the cases, n)."""
    bases = [m for m in CLASS_METRICS if any(f"{m}/{n}" in summary for n in names)]
    bases += sorted({k.split("/", 1)[0] for k in summary if "/" in k} - set(bases))
    if not bases:
        return ""
    head = "<tr><th>class</th>" + "".join(f"<th>{html.escape(b)}{_arrow(b)}</th>" for b in bases) + "</tr>"
    rows = []
    for k, name in enumerate([*names, None]):
        label = (
            "<i>mean over classes</i>"
            if name is None
            else f"<span class='swatch' style='background:{class_colour(k)}'></span>{html.escape(name)}"
        )
        cells = "".join(
            f"<td class='num'>{_cell(summary.get(b if name is None else f'{b}/{name}'))}</td>" for b in bases
        )
        rows.append(f"<tr><td class='name'>{label}</td>{cells}</tr>")
    return (
        f"<h2>{html.escape(title)}</h2>\n<div class='scroll'><table class='summary'>{head}\n"
        + "\n".join(rows)
        + ("</table></div>")
    )


def _arrow(base: str) -> str:
    return " &darr;" if base.startswith(_LOWER_BETTER) else ""


def _cell(s: dict | None) -> str:
    if not isinstance(s, dict) or s.get("mean") is None:
        return "–"
    return f"{s['mean']:.4f} &plusmn; {s['std']:.4f} <span class='muted'>(n={s['n']})</span>"


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


def overlay_classes(ax, atoms: np.ndarray, scheme: LabelScheme) -> None:
    """Each class of the atom map ``atoms`` (H,W) filled and outlined in its colour (regions overlap)."""
    masks = scheme.class_masks(torch.from_numpy(np.asarray(atoms).astype(np.int64))).numpy()
    for k, mask in enumerate(masks):
        if mask.any():
            overlay_mask(ax, mask, class_colour(k), alpha=0.4)


def figure_legend(fig, scheme: LabelScheme) -> None:
    """A legend of the class colours below the panels."""
    handles = [Patch(facecolor=class_colour(k), label=n) for k, n in enumerate(scheme.names)]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
