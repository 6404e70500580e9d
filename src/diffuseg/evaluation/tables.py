"""The report's HTML tables that hold many numbers (per class, per group, per case, against a baseline), laid out
to fit a page ``PAGE_WIDTH`` px wide for up to ``MAX_CLASSES`` classes without wrapping a number.

Rules that keep them narrow: number cells never wrap (CSS ``td.num { white-space: nowrap }``) and are short
(``short``: 3 decimals, ``mean ± std``, the count only where it differs from the table's); a table with a column
per class holds at most ``CLASS_COLUMNS`` classes (more are split over several tables), so no table has more than
``MAX_COLUMNS`` columns; class names in column headers are cut to ``HEADER_CHARS`` characters with the full name in
a tooltip. The per-class table has the classes as rows and ``CLASS_METRICS`` as columns; the other per-class
metrics go to a transposed table (metrics as rows, classes as columns).
"""

from __future__ import annotations

import html
from typing import Any

from diffuseg.evaluation.figures import class_colour
from diffuseg.evaluation.headline import lower_is_better
from diffuseg.evaluation.references import REFERENCE_LABELS

PAGE_WIDTH = 1400
"""The window width (px) the report fits without horizontal scrolling."""
CLASS_COLUMNS = 7
"""The most classes one table has as columns."""
MAX_COLUMNS = 13
"""No table has more columns than this (the case table: case, group, 4 metrics and ``CLASS_COLUMNS`` classes)."""
HEADER_CHARS = 8

# The per-class metrics the class table shows as columns, in this order; any other per-class metric goes to
# the transposed table.
CLASS_METRICS = ("dice", "iou", "hd95", "ged", "sample_dice", "diversity", "pixel_auroc")
# The metrics of the case table, in this order (those some case has); several classes add Dice per class.
CASE_METRICS = ("dice", "iou", "hd95", "ged", "ged_biased", "sample_dice", "diversity", "ece")
CASE_METRICS_CLASSES = ("dice", "iou", "hd95", "ged")


def fmt(v: Any, digits: int = 4) -> str:
    """A number as the tables print it (``–`` for undefined)."""
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.1f}"
    return html.escape(str(v))


def short(s: dict | None, n_expected: int | None = None) -> str:
    """``mean ± std`` of a ``metrics.summarize`` dict with 3 decimals, ``(n=…)`` only when ``n`` differs from
    ``n_expected``; ``–`` when undefined. The full statistics are in the cell's tooltip."""
    if not isinstance(s, dict) or s.get("mean") is None:
        return "–"
    n = f" <small>(n={s['n']})</small>" if n_expected is not None and s.get("n") != n_expected else ""
    return f"{s['mean']:.3f} <small>&plusmn; {s['std']:.3f}</small>{n}"


def _tip(s: dict | None) -> str:
    if not isinstance(s, dict) or s.get("mean") is None:
        return ""
    return (
        f" title='mean {s['mean']:.4f}, std {s['std']:.4f}, median {s['median']:.4f}, min {s['min']:.4f}, "
        f"max {s['max']:.4f}, n {s['n']}, undefined {s.get('n_undefined', 0)}'"
    )


def num_cell(s: dict | None, n_expected: int | None = None) -> str:
    return f"<td class='num'{_tip(s)}>{short(s, n_expected)}</td>"


def arrow(metric: str) -> str:
    """`` ↓`` after a metric where lower is better."""
    return " &darr;" if lower_is_better(metric) else ""


def class_header(name: str, k: int) -> str:
    """A column header for class ``k``: its colour and its name, cut to ``HEADER_CHARS`` (full name on hover)."""
    shown = name if len(name) <= HEADER_CHARS else name[: HEADER_CHARS - 1] + "…"
    return (
        f"<th title='{html.escape(name)}'><span class='swatch' style='background:{class_colour(k)}'></span>"
        f"{html.escape(shown)}</th>"
    )


def _table(title: str, head: str, rows: list[str], note: str = "") -> str:
    note_html = f"<p class='muted'>{note}</p>\n" if note else ""
    return f"<h2>{html.escape(title)}</h2>\n{note_html}<table class='summary'>{head}\n" + "\n".join(rows) + "</table>"


def typical_n(summary: dict) -> int | None:
    """The most common ``n`` of a summary (the number of cases most metrics are defined on)."""
    counts = [s.get("n") for s in summary.values() if isinstance(s, dict)]
    return max(set(counts), key=counts.count) if counts else None


def class_table(summary: dict, names: list[str], title: str, references: dict | None = None) -> str:
    """Rows: the classes and their mean; columns: ``CLASS_METRICS`` (mean ± std; n where it differs), then the
    Dice of each reference mask (``results.json["references"][name]`` at the same level) where given."""
    bases = [m for m in CLASS_METRICS if _some(summary, m, names)]
    if not bases:
        return ""
    n = typical_n(summary)
    refs = {r: table for r, table in (references or {}).items() if table}
    head = "<tr><th>class</th>" + "".join(f"<th>{html.escape(b)}{arrow(b)}</th>" for b in bases)
    head += "".join(f"<th>dice, {html.escape(REFERENCE_LABELS[r])}</th>" for r in refs) + "</tr>"
    rows = []
    for k, name in enumerate([*names, None]):
        label = (
            "<i>mean over classes</i>"
            if name is None
            else f"<span class='swatch' style='background:{class_colour(k)}'></span>{html.escape(name)}"
        )
        key = "{}" if name is None else f"{{}}/{name}"
        cells = "".join(num_cell(summary.get(key.format(b)), n) for b in bases)
        cells += "".join(
            f"<td class='num'{_tip(t.get(key.format('dice')))}>{fmt((t.get(key.format('dice')) or {}).get('mean'), 3)}"
            "</td>"
            for t in refs.values()
        )
        rows.append(f"<tr><td class='name'>{label}</td>{cells}</tr>")
    what = "volume" if "volume" in title else "case"
    note = f"mean &plusmn; std over {n} {what}(s); n where fewer define it."
    if refs:
        note += " The last columns: the Dice of the reference masks on the same cases (each class on its own masks)."
    return _table(title, head, rows, note)


def _some(summary: dict, base: str, names: list[str]) -> bool:
    """Whether some class defines ``base`` (a metric undefined everywhere, e.g. GED with one annotator, gets no
    column)."""
    return any((summary.get(f"{base}/{n}") or {}).get("mean") is not None for n in names)


def class_blocks(names: list[str]) -> list[list[tuple[int, str]]]:
    """The classes ``(index, name)`` in blocks of at most ``CLASS_COLUMNS``, of near-equal size."""
    count = -(-len(names) // CLASS_COLUMNS)
    size = -(-len(names) // max(1, count))
    indexed = list(enumerate(names))
    return [indexed[i : i + size] for i in range(0, len(indexed), size)] or [[]]


def other_class_table(summary: dict, names: list[str], title: str) -> str:
    """The per-class metrics not in ``CLASS_METRICS``, transposed: rows the metrics, columns the classes (mean;
    std and n on hover), one table per block of ``CLASS_COLUMNS`` classes."""
    bases = sorted({k.split("/", 1)[0] for k in summary if "/" in k} - set(CLASS_METRICS))
    bases = [b for b in bases if _some(summary, b, names)]
    if not bases:
        return ""
    blocks = class_blocks(names)
    tables = []
    for b, block in enumerate(blocks):
        head = "<tr><th>metric</th>" + "".join(class_header(n, k) for k, n in block) + "</tr>"
        rows = []
        for base in bases:
            stats = [summary.get(f"{base}/{n}") for _, n in block]
            cells = "".join(f"<td class='num'{_tip(st)}>{fmt((st or {}).get('mean'), 3)}</td>" for st in stats)
            rows.append(f"<tr><td class='name'>{html.escape(base)}{arrow(base)}</td>{cells}</tr>")
        part = f" ({b + 1} of {len(blocks)})" if len(blocks) > 1 else ""
        note = "mean over the cases; hover a cell for std, median, n." if b == 0 else ""
        tables.append(_table(title + part, head, rows, note))
    return "\n".join(tables)


def case_table(rows: list[dict], names: list[str], groups: dict[str, str], limit: int = 500) -> str:
    """Every case (up to ``limit``): its group, the main metrics and, with several classes, Dice per class."""
    if not rows:
        return ""
    wanted = CASE_METRICS_CLASSES if len(names) > 1 else CASE_METRICS
    metrics = [m for m in wanted if any(r.get(m) is not None for r in rows)]
    blocks = class_blocks(names) if len(names) > 1 else [[]]
    tables = []
    for b, block in enumerate(blocks):
        shown = metrics if b == 0 else []
        head = "<th>case</th>" + ("<th>group</th>" if groups and b == 0 else "")
        head += "".join(f"<th>{html.escape(m)}{arrow(m)}</th>" for m in shown)
        head += "".join(class_header(n, k) for k, n in block)
        body = []
        for r in rows[:limit]:
            cells = f"<td class='name'>{html.escape(r['case'])}</td>"
            cells += f"<td>{html.escape(groups.get(r['case'], ''))}</td>" if groups and b == 0 else ""
            keys = (*shown, *(f"dice/{n}" for _, n in block))
            cells += "".join(f"<td class='num'>{fmt(r.get(m), 3)}</td>" for m in keys)
            body.append(f"<tr>{cells}</tr>")
        tables.append(f"<table class='cases'><tr>{head}</tr>\n" + "\n".join(body) + "</table>")
    more = f" (first {limit} of {len(rows)})" if len(rows) > limit else ""
    what = "; Dice per class in the class columns" if len(names) > 1 else ""
    return (
        f"<details><summary>Every case{more}{what}; every metric in results.csv</summary>\n"
        + "\n".join(tables)
        + "</details>"
    )


def group_table(results: dict, level: str, metrics: list[str]) -> str:
    """Rows: each group, then every case together; columns: how many, ``metrics`` (mean ± std), and what the
    reference masks score on the first metric in that group."""
    groups = results.get("groups") or {}
    key = "volume_summary" if level == "volume" else "summary"
    if not groups or not metrics:
        return ""
    first = metrics[0]
    head = f"<tr><th>group</th><th>{level}s</th>" + "".join(f"<th>{html.escape(m)}{arrow(m)}</th>" for m in metrics)
    head += "".join(f"<th>{html.escape(label)}: {html.escape(first)}</th>" for label in REFERENCE_LABELS.values())
    head += "</tr>"
    rows = []
    for name, entry in [*groups.items(), ("all cases", results)]:
        summary = entry.get(key) or {}
        count = typical_n(summary) or 0
        cells = "".join(num_cell(summary.get(m), count) for m in metrics)
        refs = entry.get("references") or {}
        cells += "".join(num_cell((refs.get(r, {}).get(key) or {}).get(first), count) for r in REFERENCE_LABELS)
        label = f"<i>{name}</i>" if entry is results else html.escape(name)
        rows.append(f"<tr><td class='name'>{label}</td><td class='num'>{count}</td>{cells}</tr>")
    note = (
        "Groups are the dataset's class folders. The references are what the empty and the all-foreground mask "
        "score on the same cases: in a group of images without lesions the empty mask scores Dice 1."
    )
    return _table("Per group", head, rows, note)


def comparison_table(rows: list[dict], baseline: str, level: str) -> str:
    """The paired differences against a baseline (``compare.paired_difference`` rows): one row per metric;
    ``baseline``: HTML naming it."""
    if not rows:
        return ""
    head = (
        "<tr><th>metric</th><th>this run</th><th>baseline</th><th>difference</th><th>95% CI</th>"
        f"<th>{level}s</th><th>better / worse / tied</th></tr>"
    )
    body = []
    for r in rows:
        ci = f"{r['low']:+.3f} to {r['high']:+.3f}" if r["n"] else "–"
        diff = f"{r['difference']:+.3f}" if r["n"] else "–"
        body.append(
            f"<tr><td class='name'>{html.escape(r['metric'])}{arrow(r['metric'])}</td>"
            f"<td class='num'>{fmt(r['run_mean'], 3)}</td><td class='num'>{fmt(r['baseline_mean'], 3)}</td>"
            f"<td class='num'><b>{diff}</b></td><td class='num'>{ci}</td><td class='num'>{r['n']}</td>"
            f"<td class='num'>{r['better']} / {r['worse']} / {r['tied']}</td></tr>"
        )
    note = (
        f"Paired over the {level}s both define, difference = this run - baseline; 95% CI: percentile bootstrap "
        f"of the mean difference over {level}s ({rows[0]['resamples']:,} resamples, seed {rows[0]['seed']}). "
        f"Baseline: {baseline}."
    )
    return _table("Against the baseline", head, body, note)


def legend_html(names: tuple[str, ...] | list[str], regions: bool = False) -> str:
    """One swatch per class, in its colour (hex code as the title), as the overlays draw it."""
    items = "".join(
        f"<span class='class-item'><span class='swatch' style='background:{class_colour(k)}' "
        f"title='{class_colour(k)}'></span>{html.escape(name)}</span>"
        for k, name in enumerate(names)
    )
    kind = "regions (overlapping; scored on the region masks)" if regions else "classes"
    return f"<div class='legend'><b>{kind}:</b> {items}</div>"
