#!/usr/bin/env python
"""Draw who trains, validates or is held out under each split rule, for the SSL4MIS release of ACDC (51 patients,
two frames each): one row per rule, one column per patient, its frames side by side. The sides come from the
code's own split (``diffuseg.data.splits.plan_split`` on the dataset's cases, with the list files of each row
written to a temporary folder), so the figure shows what ``train`` does and cannot drift from it.

    python scripts/split_figure.py DATA/acdc --out docs/images/splits-acdc.png
"""

from __future__ import annotations

import argparse
import re
import tempfile
from pathlib import Path

import numpy as np

SIDES = ("train", "validation", "held out (test.list)", "left out (on no list)")
COLOURS = ("#4c78a8", "#f58518", "#9d9d9d", "#e9e1c9")


def rows(acdc: Path) -> list[tuple[str, dict[str, str], dict]]:
    """(label, list files of the dataset folder by name -> text, ``DataConfig`` fields) per row, top to bottom."""
    train, val = ((acdc / name).read_text() for name in ("train.list", "val.list"))
    test = {"train.list": train, "test.list": val}
    out = [
        ("train.list + val.list (as released)", {"train.list": train, "val.list": val}, {}),
        ("train.list alone", {"train.list": train}, {}),
        ("train.list + test.list (val.list renamed)", test, {}),
    ]
    out += [(f"--fold {k}, with that test.list", test, {"fold": k}) for k in range(5)]
    out += [
        ("no lists: seeded, val_fraction 0.2", {}, {}),
        ("no lists, patient_regex '(.*)'", {}, {"patient_regex": "(.*)"}),
    ]
    return out


def sides(reader, lists: dict[str, str], fields: dict) -> tuple[dict[str, int], str]:
    """Per case name its side (index into ``SIDES``) under the split ``lists`` and ``fields`` give, and the
    split's one line."""
    from diffuseg.config import DataConfig
    from diffuseg.data.splits import case_names, plan_split

    reader = reader.subset(range(len(reader)))  # plan_split sets patient ids on the entries: a copy per row
    with tempfile.TemporaryDirectory() as folder:
        for name, text in lists.items():
            (Path(folder) / name).write_text(text)
        split = plan_split(reader, DataConfig(root=folder, **fields))
    names = case_names(reader)
    side = {n: SIDES.index("held out (test.list)") for n, p in zip(names, reader.patients) if p in split.held_out}
    for k, indices in enumerate((split.train, split.val)):
        side.update({names[i]: k for i in indices})
    return {n: side.get(n, SIDES.index("left out (on no list)")) for n in names}, split.describe()


def natural(text: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("acdc", type=Path, help="the SSL4MIS ACDC folder (data/, train.list, val.list)")
    p.add_argument("--out", type=Path, default=Path("splits-acdc.png"))
    args = p.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch, Rectangle

    from diffuseg.data.formats import open_dataset
    from diffuseg.data.formats.ssl4mis import patient_of
    from diffuseg.data.splits import case_names

    reader = open_dataset(args.acdc, "ssl4mis")
    cases = sorted(set(case_names(reader)), key=natural)
    patients = sorted({patient_of(c) for c in cases}, key=natural)
    columns: list[str | None] = []  # case name per column, None for a gap
    for patient in patients:
        columns += [c for c in cases if patient_of(c) == patient] + [None]
    columns.pop()
    table = rows(args.acdc)
    grid = np.full((len(table), len(columns)), np.nan)  # NaN: the gap between two patients
    own = {p: [i for i, c in enumerate(columns) if c is not None and patient_of(c) == p] for p in patients}
    straddles: list[tuple[int, int, int]] = []  # (row, first column, width) of a patient on two sides
    for r, (label, lists, fields) in enumerate(table):
        side, line = sides(reader, lists, fields)
        print(f"{label}: {line}")
        grid[r] = [side[c] if c is not None else np.nan for c in columns]
        split_up = [p for p in patients if len({side[columns[i]] for i in own[p]}) > 1]
        straddles += [(r, own[p][0], len(own[p])) for p in split_up]
        print(f"  {len(split_up)} of {len(patients)} patient(s) with frames on two sides")

    fig, ax = plt.subplots(figsize=(12, 0.3 * len(table) + 1.3), dpi=150)
    cmap = ListedColormap(COLOURS)
    cmap.set_bad("white")
    ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, vmin=-0.5, vmax=len(SIDES) - 0.5, aspect="auto")
    for p in patients:  # a thin line between the frames of one patient
        for i in own[p][1:]:
            ax.axvline(i - 0.5, color="white", linewidth=0.6)
    for r, first, width in straddles:
        ax.add_patch(Rectangle((first - 0.5, r - 0.5), width, 1, fill=False, edgecolor="black", linewidth=1.2))
    for r in range(1, len(table)):
        ax.axhline(r - 0.5, color="white", linewidth=2)
    ax.set_yticks(range(len(table)), [label for label, _, _ in table], fontsize=8)
    numbers = [p.removeprefix("patient").lstrip("0") for p in patients]
    ax.set_xticks([np.mean(own[p]) for p in patients], numbers, fontsize=6, rotation=90)
    ax.set_xlabel("ACDC patient (its two frames side by side)", fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    handles = [Patch(facecolor=c, edgecolor="#777777", label=s) for s, c in zip(SIDES, COLOURS)]
    handles.append(Patch(facecolor="none", edgecolor="black", label="one patient's frames on two sides"))
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.4, -0.2), ncol=5, fontsize=8, frameon=False)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
