"""Per-group results: the cases of a dataset in named groups, each summarised as the whole set is.

A case's group is its ``Geometry.category``: the class folder of the ``classes`` layout (BUSI's ``benign``,
``malignant``, ``normal``), which the ground-truth reader ``evaluate`` opens already gives; a volume's group is
that of its slices. ``results.json["groups"]`` holds, per group, its case ids, the summaries over its cases and
volumes, and the reference masks' summaries (``evaluation.references``) over the same cases; ``results.csv``
gets a ``group`` column, and ``results_groups.csv`` one row per (group, level, metric) with the statistics and
the references' means, the whole set first as group ``(all)``.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from diffuseg.evaluation.references import REFERENCES, ReferenceAccumulator, summarize_rows

ALL = "(all)"
"""The group name of the whole set in ``results_groups.csv``."""

GROUPS_CSV = "results_groups.csv"
_STATS = ("mean", "std", "median", "min", "max", "n", "n_undefined")


def group_results(
    case_groups: dict[str, str],
    volume_groups: dict[str, str],
    cases: list[dict],
    volumes: list[dict],
    references: ReferenceAccumulator,
) -> dict[str, Any]:
    """``{group: {"cases": [id, ...], "volumes": [id, ...], "summary", "volume_summary", "references"}}``, the
    groups sorted by name; ``{}`` when no case has a group.

    Args:
        case_groups: case id -> group, for the scored cases that have one.
        volume_groups: volume id -> group.
        cases: the scored case rows (``results.json["cases"]``).
        volumes: the volume rows.
        references: the reference masks' rows of the same cases and volumes.
    """
    out: dict[str, Any] = {}
    for group in sorted(set(case_groups.values())):
        ids = {c for c, g in case_groups.items() if g == group}
        vids = {v for v, g in volume_groups.items() if g == group}
        refs = {
            name: {
                "summary": summarize_rows(references.rows(name), ids),
                "volume_summary": summarize_rows(references.rows(name, volume=True), vids),
            }
            for name in REFERENCES
        }
        out[group] = {
            "cases": [r["case"] for r in cases if r["case"] in ids],
            "volumes": [r["case"] for r in volumes if r["case"] in vids],
            "summary": summarize_rows(cases, ids),
            "volume_summary": summarize_rows(volumes, vids),
            "references": refs,
        }
    return out


def group_of_cases(results: dict[str, Any]) -> dict[str, str]:
    """Case id -> group, read back from ``results["groups"]`` (``{}`` without groups)."""
    return {case: group for group, entry in (results.get("groups") or {}).items() for case in entry["cases"]}


def groups_csv(results: dict[str, Any]) -> str:
    """``results_groups.csv``: ``group, level, metric`` (level ``case`` or ``volume``), the statistics of
    ``metrics.summarize``, and the mean of each reference mask where it scores that metric."""
    columns = ["group", "level", "metric", *_STATS, *REFERENCES]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns)
    writer.writeheader()
    entries = [(ALL, results), *(results.get("groups") or {}).items()]
    for group, entry in entries:
        for level, key in (("case", "summary"), ("volume", "volume_summary")):
            refs = entry.get("references") or {}
            for metric, stats in (entry.get(key) or {}).items():
                row = {"group": group, "level": level, "metric": metric, **{s: stats.get(s) for s in _STATS}}
                for name in REFERENCES:
                    row[name] = ((refs.get(name) or {}).get(key) or {}).get(metric, {}).get("mean")
                writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()
