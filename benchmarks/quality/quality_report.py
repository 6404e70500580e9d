"""Build ``quality.md`` and its plots from the finished parts of ``quality.py`` (JSON files), next to the papers'
numbers, with each of the papers' orderings checked: reproduced or not, and by how much."""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

from common import line_plot, markdown_table, write_markdown

# The ambiguity paper, Table 1 (central crop, 128 px, 400k iterations): GED and Dice at 4 and 16 predictions.
PAPER_LIDC = {
    "Prob. UNet (AA)": {"ged_4": 0.334, "dice_4": 0.488, "ged_16": 0.235, "dice_16": 0.491},
    "diffusion (ambiguity paper)": {"ged_4": 0.330, "dice_4": 0.488, "ged_16": 0.233, "dice_16": 0.486},
}
# Table 3 (central crop, 50k iterations): GED/Dice; the eps row lost its label in the export (see text).
PAPER_T3 = {
    "x": {"snr": (0.456, 0.388), "truncated_snr": (0.342, 0.475), "snr_plus_one": (0.338, 0.474),
          "uniform": (0.339, 0.476)},
    "eps": {"snr": (0.822, 0.144), "truncated_snr": (1.135, 0.011), "snr_plus_one": (0.759, 0.141),
            "uniform": (0.849, 0.144)},
    "v": {"snr": (0.410, 0.425), "truncated_snr": (0.335, 0.482), "snr_plus_one": (0.334, 0.482),
          "uniform": (0.337, 0.479)},
}  # fmt: skip
# MedSegDiff, thyroid nodule (DDTI) column: Table 2 (Dice %), Table 5 (Dice % +- variance), Table 4.
PAPER_T2 = {"(a) SegDiff-style baseline": 81.9, "(b) + Dy-Cond": 83.6, "(c) + FF-Parser (MedSegDiff)": 84.8}
PAPER_T5 = {
    "1 member(s)": 84.45, "5 member(s)": 85.27, "5 member(s) + STAPLE": 85.84,
    "25 member(s)": 85.95, "25 member(s) + STAPLE": 86.18,
}  # fmt: skip
PAPER_T4 = "DPM-Solver: 81.95 (-2.88 vs 100-step MedSegDiff-B); Flow-S&F 82.27 (-2.56); DDSS 82.06 (-2.77)"


def _cases(scores: Iterable[Mapping[str, Any]]) -> Any:
    """The number of cases the first of ``scores`` was computed on (every score of a part uses the same)."""
    return next((s.get("cases") for s in scores), None)


def _floor(floors: Mapping[str, Mapping[str, float]], cases: Any) -> str:
    """What an always-empty prediction scores on the same ``cases`` slices (part ``lidc-floor``), or where to
    get it when that part has not run."""
    f = floors.get(str(int(cases))) if cases else None
    if f is None:
        return "the always-empty floor on these slices is not measured here (part lidc-floor of quality.py scores it)"
    return (f"floor on these {int(cases)} slices: an always-empty prediction scores GED {f['ged_biased_16']:.3f} "
            f"(biased estimator) / {f['ged_16']:.3f} (unbiased), Dice {f['dice']:.3f}")  # fmt: skip


def _load(folder: Path, name: str) -> dict[str, Any] | None:
    path = folder / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _order(label: str, values: Mapping[str, float], lower_is_better: bool, paper: list[str]) -> str:
    """One line: the paper's order of ``paper`` (best first) and whether ours agrees, with the gaps."""
    present = [k for k in paper if k in values and not math.isnan(values[k])]
    if len(present) < 2:
        return ""
    ours = sorted(present, key=lambda k: values[k], reverse=not lower_is_better)
    same = ours == [k for k in paper if k in present]
    gaps = ", ".join(f"{k} {values[k]:.3f}" for k in ours)
    verdict = "reproduces" if same else "does NOT reproduce"
    return f"- {label}: paper's order (best first) {' > '.join(present)}; ours {gaps} -> {verdict}.\n"


def _worst(label: str, key: str, values: Mapping[str, float]) -> str:
    """One line: whether ``values[key]`` is the highest (worst) GED of ``values``, as the paper reports."""
    others = {k: v for k, v in values.items() if k != key}
    if key not in values or not others:
        return ""
    verdict = "reproduces" if values[key] > max(others.values()) else "does NOT reproduce"
    rest = ", ".join(f"{k} {v:.3f}" for k, v in others.items())
    return f"- {label}: {key} {values[key]:.3f} vs {rest} -> {verdict}.\n"


def _budget_table(budgets: Mapping[str, Mapping[str, Any]], fields: Collection[str]) -> str:
    """One row per field of the current ``Budget`` (``fields``; a renamed field of an older part is left out):
    its value, or where the parts ran with different values, each value with the parts that used it."""

    def text(v: Any) -> str:
        return ", ".join(map(str, v)) if isinstance(v, list) else str(v)

    rows = []
    for field in fields:
        parts_by_value: dict[str, list[str]] = {}
        for part, b in budgets.items():
            if field in b:
                parts_by_value.setdefault(text(b[field]), []).append(part)
        if len(parts_by_value) == 1:
            rows.append([field, next(iter(parts_by_value))])
        elif parts_by_value:
            rows.append([field, "; ".join(f"{v} ({', '.join(ps)})" for v, ps in parts_by_value.items())])
    return markdown_table(["budget", "value"], rows)


def lidc_main_section(d: dict, floors: Mapping[str, Mapping[str, float]]) -> tuple[str, str]:
    rows, order_vals, order_dice = [], {}, {}
    for label, r in d["rows"].items():
        rows.append([label, r.get("params", 0) / 1e6, r.get("ged_biased_4"), r.get("ged_biased_16"), r.get("ged_16"),
                     r.get("dice"), r.get("sample_dice"), r.get("hungarian_iou"), r.get("diversity"),
                     r.get("train_min"), r.get("eval_min")])  # fmt: skip
        order_vals[label] = r.get("ged_biased_16", math.nan)
        order_dice[label] = r.get("dice", math.nan)
    table = markdown_table(
        ["model", "params (M)", "GED@4", "GED@16", "GED@16 unbiased", "Dice (fused vs annotators)",
         "Dice (samples vs annotators)", "HM-IoU", "diversity", "train min", "eval min"], rows)  # fmt: skip
    paper = "\n".join(f"- paper, {k}: GED@4 {v['ged_4']}, GED@16 {v['ged_16']}, Dice {v['dice_16']}"
                      for k, v in PAPER_LIDC.items())  # fmt: skip
    text = (
        table + f"\nGED with d = 1 - IoU, the estimator with i = j pairs (as the papers' tables) unless marked "
        f"unbiased; {_floor(floors, _cases(d['rows'].values()))}.\n\n{paper}\n\n"
    )
    # one ordering check per learning rate: the presets' lr, then each of lidc_lrs (rows "..., lr X")
    for suffix in [k.removeprefix("Prob. UNet (AA)") for k in d["rows"] if k.startswith("Prob. UNet (AA)")]:
        diffusion = next(
            k for k in (f"diffusion (ambiguity paper){suffix}", "diffusion (ambiguity paper)") if k in d["rows"]
        )
        order = [diffusion, f"Prob. UNet (AA){suffix}", f"deterministic UNet{suffix}"]
        text += _order(f"GED@16{suffix}", order_vals, True, order) + _order(f"Dice{suffix}", order_dice, False, order)
    return "LIDC: diffusion vs Prob. UNet vs deterministic UNet (ambiguity paper, Table 1)", text


def lidc_fig6_section(d: dict, folder: Path, floors: Mapping[str, Mapping[str, float]]) -> tuple[str, str]:
    rows, ged, dice = [], {}, {}
    for sampler, by_steps in d["curves"].items():
        for steps, r in sorted(by_steps.items(), key=lambda kv: int(kv[0])):
            rows.append([sampler, int(steps), r.get("ged_biased_4"), r.get("sample_dice"), r.get("dice")])
            ged.setdefault(sampler, ([], []))
            dice.setdefault(sampler, ([], []))
            ged[sampler][0].append(int(steps))
            ged[sampler][1].append(r.get("ged_biased_4"))
            dice[sampler][0].append(int(steps))
            dice[sampler][1].append(r.get("sample_dice"))
    line_plot(folder.parent / f"{folder.name}-fig6-ged.png", ged, xlabel="sampling steps", ylabel="GED@4",
              title="LIDC: DDPM vs DDIM (Fig. 6)", logx=True)  # fmt: skip
    line_plot(folder.parent / f"{folder.name}-fig6-dice.png", dice, xlabel="sampling steps",
              ylabel="Dice (samples vs annotators)", title="LIDC: DDPM vs DDIM (Fig. 6)", logx=True)  # fmt: skip
    table = markdown_table(["sampler", "steps", "GED@4", "Dice (samples)", "Dice (fused)"], rows)
    best = {s: min(v[0], key=lambda k: -v[1][v[0].index(k)]) for s, v in dice.items()}
    cases = _cases(c for by_steps in d["curves"].values() for c in by_steps.values())
    note = ("\nPaper (Fig. 6): the best Dice comes with few steps; 10-step DDIM is used for central crops. "
            f"Here the best sample Dice is at {best} steps; {_floor(floors, cases)}.\n")  # fmt: skip
    return "LIDC: DDPM vs DDIM against steps (ambiguity paper, Fig. 6)", table + note


def lidc_table3_section(d: dict, floors: Mapping[str, Mapping[str, float]]) -> tuple[str, str]:
    cells = d["cells"]
    rows = []
    for pred in ("x", "eps", "v"):
        row: list[Any] = [pred]
        for w in ("snr", "truncated_snr", "snr_plus_one", "uniform"):
            c = cells.get(f"{pred}-{w}")
            p = PAPER_T3[pred][w]
            ours = f"{c['ged_biased_4']:.3f}/{c['dice']:.3f}" if c else "not run"
            row.append(f"{ours} (paper {p[0]:.3f}/{p[1]:.3f})")
        rows.append(row)
    table = markdown_table(["prediction", "SNR", "truncated SNR", "SNR+1", "uniform"], rows)
    lines = []
    by_pred = {p: [cells[f"{p}-{w}"]["ged_biased_4"] for w in ("truncated_snr", "snr_plus_one", "uniform")
                   if f"{p}-{w}" in cells] for p in ("x", "eps", "v")}  # fmt: skip
    means = {p: sum(v) / len(v) for p, v in by_pred.items() if v}
    lines.append(_worst("eps-prediction worst (mean GED@4 over the three non-SNR weightings)", "eps", means))
    for p in ("x", "v"):
        vals = {w: cells[f"{p}-{w}"]["ged_biased_4"] for w in ("snr", "truncated_snr", "snr_plus_one", "uniform")
                if f"{p}-{w}" in cells}  # fmt: skip
        lines.append(_worst(f"{p}-prediction, SNR weighting worst (GED@4)", "snr", vals))
    status = "" if d.get("complete") else "\n(partial: the table is still being filled)\n"
    return (
        "LIDC: prediction type x loss weighting (ambiguity paper, Table 3), GED@4 / Dice (fused)",
        table + "\nPaper cells are GED/Dice at 16 predictions after 50k iterations; "
        f"{_floor(floors, _cases(cells.values()))}.\n" + "".join(lines) + status,
    )


def ddti_table2_section(d: dict) -> tuple[str, str]:
    rows, dice = [], {}
    for label, r in d["rows"].items():
        paper = PAPER_T2.get(label)
        rows.append([label, r.get("members"), 100 * r["dice"], 100 * r["iou"], r.get("hd95"), paper,
                     r.get("train_min"), r.get("eval_min")])  # fmt: skip
        dice[label] = r["dice"]
    table = markdown_table(["model", "members (STAPLE)", "Dice %", "IoU %", "HD95 (px at model size)",
                            "paper Dice %", "train min", "eval min"], rows)  # fmt: skip
    order = ["(c) + FF-Parser (MedSegDiff)", "(b) + Dy-Cond", "(a) SegDiff-style baseline"]
    return "DDTI: MedSegDiff ablation (Table 2) and the deterministic UNet", table + _drawn_with(d) + _order(
        "Dice", dice, False, order
    )


def _drawn_with(d: dict) -> str:
    b = d.get("budget", {})
    return f"\nDrawn with {b.get('ddti_sampler', 'ddim').upper()}, {b.get('ddti_steps')} steps.\n"


def ddti_table5_section(d: dict) -> tuple[str, str]:
    rows, vals = [], {}
    for label, (mean, std, groups) in d["rows"].items():
        rows.append([label, 100 * mean, 100 * std, int(groups), PAPER_T5.get(label)])
        vals[label] = mean
    table = markdown_table(["ensemble", "Dice %", "std % over groups", "groups", "paper Dice %"], rows)
    order = [k for k in PAPER_T5 if k in vals]
    paper_order = sorted(order, key=lambda k: -PAPER_T5[k])
    return "DDTI: ensemble size and STAPLE (MedSegDiff, Table 5)", table + _drawn_with(d) + (
        "\nWithout STAPLE = mean of the members thresholded at 0.5. Groups are disjoint sets of members of one "
        "draw, so the spread is over groups, not over 20 reruns as in the paper.\n"
    ) + _order("Dice", vals, False, paper_order)


def ddti_table4_section(d: dict) -> tuple[str, str]:
    rows = d["rows"]
    ref = next((r["dice"] for k, r in rows.items() if k.startswith("ddpm")), None)
    table = markdown_table(
        ["sampler and steps", "Dice %", "vs DDPM-100 (points)", "IoU %", "HD95 (px)", "s per image"],
        [[k, 100 * r["dice"], None if ref is None else 100 * (r["dice"] - ref), 100 * r["iou"], r.get("hd95"),
          r.get("s_per_image")] for k, r in rows.items()],
    )  # fmt: skip
    return "DDTI: samplers against steps (MedSegDiff, Table 4)", table + f"\nPaper: {PAPER_T4}.\n"


def ddti_fast_section(d: dict) -> tuple[str, str]:
    rows = d["rows"]
    ref_label, ref = next(iter(rows.items()))
    table = markdown_table(
        ["sampler, steps, grid", "network calls per member", "Dice %", f"vs {ref_label} (points)", "IoU %",
         "HD95 (px)", "s per image (64 px, 1 thread)"],
        [[k, r["steps"], 100 * r["dice"], 100 * (r["dice"] - ref["dice"]), 100 * r["iou"], r.get("hd95"),
          r.get("s_per_image")] for k, r in rows.items()],
    )  # fmt: skip
    note = (
        f"\n{d['members']}-member ensembles fused with STAPLE on {d['cases']} validation images. The time of these "
        "settings at 256 x 256 with MedSegDiff-B is in speed.md (by sampler) and logs/predict-cli.log; the grid "
        "does not change the cost, only where the steps sit.\n"
    )
    return f"DDTI: few-step {d['members']}-member ensembles against {ref_label} steps", table + note


def ddti_precision_section(d: dict) -> tuple[str, str]:
    rows = d["rows"]
    ref_label, ref = next(iter(rows.items()))

    def same(r: dict, key: str) -> str | None:
        return None if key not in r else f"{100 * r[key]:.2f}%"

    table = markdown_table(
        ["sampler, steps, grid, precision", "fused Dice %", f"vs {ref_label} (points)", "member Dice %",
         "fused pixels as in fp32", "member pixels as in fp32", "s per image (64 px)"],
        [[k, 100 * r["dice"], 100 * (r["dice"] - ref["dice"]), 100 * r["sample_dice"], same(r, "same_fused"),
          same(r, "same_member"), r.get("s_per_image")] for k, r in rows.items()],
    )  # fmt: skip
    note = (
        f"\n{d['members']}-member ensembles fused with STAPLE on {d['cases']} DDTI validation images, "
        f"{d.get('threads', 1)} torch thread(s); bf16 rows are bf16 autocast from the same member seeds as the fp32 "
        "row of the same sampler setting, compared pixel by pixel.\n"
    )
    return f"DDTI: bf16 against fp32 and fewer steps ({d['members']}-member ensembles)", table + note


def acdc_section(d: dict) -> tuple[str, str]:
    """ACDC: per-class 3D Dice per validation volume (mean +- std over volumes), MedSegDiff-B against the UNet."""
    classes = d.get("classes", ["RV", "Myo", "LV"])

    def pm(s: Mapping[str, Any] | None) -> str | None:
        if not s or s.get("mean") is None:
            return None
        return f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"

    rows, means = [], {}
    for label, r in d["rows"].items():
        dice = [pm(r.get(f"dice/{c}")) for c in classes]
        hd = r.get("hd95", {}).get("mean")
        rows.append([label, r.get("members"), *dice, pm(r.get("dice")), pm(r.get("iou")), hd,
                     100 * r["slice_dice"]["dice"], r.get("train_min"), r.get("eval_min")])  # fmt: skip
        means[label] = r["dice"]["mean"]
    table = markdown_table(
        ["model", "members (STAPLE)", *[f"Dice {c} %" for c in classes], "Dice mean %", "IoU mean %",
         "HD95 (voxels at model size)", "2D slice Dice mean %", "train min", "eval min"], rows)  # fmt: skip
    first = next(iter(d["rows"].values()), {})
    b = d.get("budget", {})
    note = (
        f"\n3D Dice per validation volume (ACDC's measure), mean ± std over {first.get('volumes')} volumes "
        f"({first.get('slices')} slices) of val.list, at the model's resolution ({b.get('size')} px); the mean is over "
        f"the classes {', '.join(classes)}. Both models trained {b.get('acdc_train_steps')} steps; MedSegDiff-B drawn "
        f"with {str(b.get('ddti_sampler', '')).upper()}, {b.get('ddti_steps')} steps, members fused by multi-label "
        "STAPLE. HD95 is in voxels (the HDF5 files hold no spacing) and left out of the mean where a class is missed.\n"
    )
    lines = [_higher("Dice mean", means)]
    lines += [_higher(f"Dice {c}", {k: r[f"dice/{c}"]["mean"] for k, r in d["rows"].items()}) for c in classes]
    return "ACDC: per-class 3D Dice, MedSegDiff-B vs the deterministic UNet", table + note + "".join(lines)


def _higher(label: str, values: Mapping[str, float | None]) -> str:
    """One line: which model scores higher on ``label`` and by how many points (no paper number to compare with)."""
    known = {k: v for k, v in values.items() if v is not None and not math.isnan(v)}
    if len(known) < 2:
        return ""
    ranked = sorted(known, key=lambda k: -known[k])
    gap = 100 * (known[ranked[0]] - known[ranked[1]])
    listed = ", ".join(f"{k} {100 * known[k]:.1f}" for k in ranked)
    return f"- {label} (%): {listed} -> {ranked[0]} higher by {gap:.1f} points.\n"


def write_report(folder: Path, info: Mapping[str, str], fields: Collection[str]) -> None:
    """``folder``.md from the parts saved in ``folder``, with one budget table over the parts' budgets
    (``fields``: the current ``Budget``'s field names, in order)."""
    sections = []
    budgets: dict[str, Mapping[str, Any]] = {}
    floors = (_load(folder, "lidc-floor") or {}).get("floors", {})
    for name, build in (
        ("lidc-main", lambda d: lidc_main_section(d, floors)),
        ("lidc-fig6", lambda d: lidc_fig6_section(d, folder, floors)),
        ("lidc-table3", lambda d: lidc_table3_section(d, floors)),
        ("ddti-table2", ddti_table2_section),
        ("ddti-table5", ddti_table5_section),
        ("ddti-table4", ddti_table4_section),
        ("ddti-fast", ddti_fast_section),
        ("ddti-precision", ddti_precision_section),
        ("acdc", acdc_section),
    ):
        d = _load(folder, name)
        if d is not None:
            budgets[name] = d.get("budget", {})
            sections.append(build(d))
    if budgets:
        sections.insert(0, ("Budget", _budget_table(budgets, fields)))
    write_markdown(folder.parent / f"{folder.name}.md", "Quality at reduced scale", info, sections)
