"""Reading a ``results.json`` back: find it in a folder, load it, and refuse one whose entries have the wrong
types (an edited or foreign file) with one ``UserError`` naming the entry, before anything is drawn from it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from diffuseg.errors import UserError
from diffuseg.evaluation.evaluate import RESULTS_NAME
from diffuseg.evaluation.uncertainty_report import check_uncertainty


def find_results(source: str | os.PathLike) -> Path:
    """``source`` itself when a file, else ``source/results.json`` or the one ``source/*/results.json``."""
    path = Path(source)
    if path.is_file():
        return path
    if not path.is_dir():
        raise UserError(f"{path}: no such results.json or run folder")
    if (path / RESULTS_NAME).is_file():
        return path / RESULTS_NAME
    found = sorted(path.glob(f"*/{RESULTS_NAME}"))
    if len(found) == 1:
        return found[0]
    if found:
        listing = ", ".join(str(p) for p in found[:4])
        raise UserError(f"{path}: several results.json ({listing}); name one")
    raise UserError(f"{path}: no results.json here; run `diffuseg evaluate PRED GT` first")


def load_results(path: Path) -> dict[str, Any]:
    try:
        results = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: not a readable results.json ({err})") from None
    if not isinstance(results, dict) or not isinstance(results.get("cases"), list) or "summary" not in results:
        raise UserError(f"{path}: not a results.json written by `diffuseg evaluate` (no cases/summary)")
    check_results(results, path)
    return results


def _is_number(value: Any) -> bool:
    """A JSON number or ``null`` (an undefined metric); ``true``/``false`` are not numbers."""
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def check_results(results: dict[str, Any], path: Path) -> None:
    """``UserError`` naming ``path`` and the first entry of the wrong type (a string where a number belongs, a
    list where a table belongs, ...), so that an edited or foreign ``results.json`` is one error line."""

    def refuse(where: str, value: Any, expected: str) -> None:
        raise UserError(
            f"{path}: {where} is {json.dumps(value)[:60]}, where {expected} belongs; not a results.json as "
            "`diffuseg evaluate` writes it (rerun evaluate)"
        )

    for key in ("cases", "volumes"):
        rows = results.get(key, [])
        if not isinstance(rows, list):
            refuse(key, rows, "a list of rows")
        for i, row in enumerate(rows):
            if not isinstance(row, dict) or not isinstance(row.get("case"), str):
                refuse(f"{key}[{i}]", row, 'a row {"case": "<id>", <metric>: <number>, ...}')
            for name, value in row.items():
                if name != "case" and not _is_number(value):
                    refuse(f"{key}[{i}] ({row['case']}) {name}", value, "a number")
    for key in ("summary", "volume_summary"):
        _check_summary(results.get(key, {}), key, refuse)
    _check_sections(results.get("references", {}), "references", refuse)
    _check_groups(results.get("groups", {}), refuse)
    _check_calibration(results.get("calibration", {}), refuse)
    check_uncertainty(results.get("uncertainty", {}), refuse)
    missing = results.get("missing", {})
    if not isinstance(missing, dict) or not all(
        isinstance(ids, list) and all(isinstance(i, str) for i in ids) for ids in missing.values()
    ):
        refuse("missing", missing, '{"predictions": [<id>, ...], "ground_truth": [...]}')
    for key in ("pred", "gt", "layout", "spacing_unit"):
        if key in results and not isinstance(results[key], str):
            refuse(key, results[key], "a string")
    for key in ("annotators", "calibration_bins", "hd_percentile"):
        if key in results and not _is_number(results[key]):
            refuse(key, results[key], "a number")
    sizes = results.get("ged_sizes", [])
    if not isinstance(sizes, list) or not all(isinstance(n, int) and not isinstance(n, bool) for n in sizes):
        refuse("ged_sizes", sizes, "a list of sample counts")


def _check_summary(table: Any, where: str, refuse) -> None:
    """A summary: ``{metric: {mean, std, median, min, max, n, n_undefined}}``."""
    if not isinstance(table, dict):
        refuse(where, table, "a table {metric: {mean, std, ...}}")
    for name, stats in table.items():
        if not isinstance(stats, dict):
            refuse(f"{where}.{name}", stats, "{mean, std, median, min, max, n, n_undefined}")
        for stat, value in stats.items():
            counts = stat in ("n", "n_undefined")
            if not _is_number(value) or (counts and not isinstance(value, int)):
                refuse(f"{where}.{name}.{stat}", value, "a count" if counts else "a number")


def _check_sections(sections: Any, where: str, refuse) -> None:
    """``references``: ``{name: {"summary": <summary>, "volume_summary": <summary>}}``."""
    if not isinstance(sections, dict):
        refuse(where, sections, '{name: {"summary", "volume_summary"}}')
    for name, entry in sections.items():
        if not isinstance(entry, dict):
            refuse(f"{where}.{name}", entry, '{"summary": {...}, "volume_summary": {...}}')
        for key in ("summary", "volume_summary"):
            _check_summary(entry.get(key, {}), f"{where}.{name}.{key}", refuse)


def _check_groups(groups: Any, refuse) -> None:
    """``groups``: ``{group: {"cases": [id], "volumes": [id], "summary", "volume_summary", "references"}}``."""
    if not isinstance(groups, dict):
        refuse("groups", groups, '{group: {"cases", "summary", ...}}')
    for name, entry in groups.items():
        if not isinstance(entry, dict):
            refuse(f"groups.{name}", entry, '{"cases": [<id>, ...], "summary": {...}, ...}')
        for key in ("cases", "volumes"):
            ids = entry.get(key, [])
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                refuse(f"groups.{name}.{key}", ids, "a list of ids")
        for key in ("summary", "volume_summary"):
            _check_summary(entry.get(key, {}), f"groups.{name}.{key}", refuse)
        _check_sections(entry.get("references", {}), f"groups.{name}.references", refuse)


def _check_calibration(calibration: Any, refuse) -> None:
    """``calibration``: ``{name: {"ece": number, "bins": [[count, sum p, sum q], ...]}}``."""
    if not isinstance(calibration, dict):
        refuse("calibration", calibration, '{name: {"ece", "bins"}}')
    for name, entry in calibration.items():
        if not isinstance(entry, dict):
            refuse(f"calibration.{name}", entry, '{"ece": <number>, "bins": [[count, sum p, sum q], ...]}')
        if not _is_number(entry.get("ece")):
            refuse(f"calibration.{name}.ece", entry.get("ece"), "a number")
        bins = entry.get("bins")
        rows_ok = isinstance(bins, list) and all(isinstance(b, list) and len(b) == 3 for b in bins)
        if not rows_ok or not all(_is_number(v) and v is not None for b in bins for v in b):
            refuse(f"calibration.{name}.bins", bins, "rows [count, sum p, sum q] of numbers")
