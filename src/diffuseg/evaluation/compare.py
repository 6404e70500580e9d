"""A run against a baseline on the same cases: the paired difference per case (or volume) and its bootstrap CI.

``diffuseg report RUN --baseline OTHER`` compares two methods scored on the same ground truth. OTHER is a
``results.json``, a folder holding one (a prediction or run folder, ``report.find_results``), or a prediction
folder without one, which is then scored here against the run's ground truth, layout and classes
(``evaluate.evaluate``, written to ``<report>/baseline/results.json``). The comparison is at the headline level
(``headline.headline_level``: volumes for 3D data, else cases), and refused with one ``UserError`` when the two
results score different cases: a paired difference needs the same ones.

Per metric: ``d_i = run_i - baseline_i`` over the cases both define, its mean, and the percentile bootstrap 95%
interval of that mean (Efron & Tibshirani 1993, ch. 13: resample the cases with replacement, ``RESAMPLES`` times,
from a ``numpy`` generator seeded with ``SEED``), with the counts of cases where the run is better, worse or tied
(lower is better for HD95 and GED).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from diffuseg.errors import UserError
from diffuseg.evaluation.evaluate import evaluate
from diffuseg.evaluation.headline import SUMMARY_KEYS, headline_level, headline_metric, lower_is_better, main_metrics
from diffuseg.evaluation.results_file import find_results, load_results
from diffuseg.inference.outputs import find_predictions

RESAMPLES = 10_000
SEED = 0
_CHUNK = 2_000_000  # resampled values drawn at once (memory)


def bootstrap_ci(
    differences: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED, level: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of ``differences`` ``(n,)``: the ``(1 - level) / 2`` and
    ``(1 + level) / 2`` quantiles of the means of ``resamples`` resamples (n cases drawn with replacement)."""
    d = np.asarray(differences, dtype=np.float64)
    if d.size == 0:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    per = max(1, _CHUNK // d.size)
    means = np.concatenate(
        [d[rng.integers(0, d.size, (min(per, resamples - s), d.size))].mean(1) for s in range(0, resamples, per)]
    )
    alpha = (1 - level) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return float(low), float(high)


def paired_difference(
    run: dict[str, float | None],
    baseline: dict[str, float | None],
    metric: str,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> dict[str, Any]:
    """``{"metric", "n", "run_mean", "baseline_mean", "difference", "low", "high", "better", "worse", "tied",
    "undefined", "resamples", "seed"}`` of ``metric`` over the ids both ``run`` and ``baseline`` (id -> value,
    ``None`` undefined) define; means are over those paired ids."""
    ids = [i for i in run if _number(run[i]) and _number(baseline.get(i))]
    a = np.array([run[i] for i in ids], dtype=np.float64)
    b = np.array([baseline[i] for i in ids], dtype=np.float64)
    d = a - b
    low, high = bootstrap_ci(d, resamples, seed)
    gain = -d if lower_is_better(metric) else d
    nan = math.nan
    return {
        "metric": metric,
        "n": len(ids),
        "run_mean": float(a.mean()) if ids else nan,
        "baseline_mean": float(b.mean()) if ids else nan,
        "difference": float(d.mean()) if ids else nan,
        "low": low,
        "high": high,
        "better": int((gain > 0).sum()),
        "worse": int((gain < 0).sum()),
        "tied": int((gain == 0).sum()),
        "undefined": len(run) - len(ids),
        "resamples": resamples,
        "seed": seed,
    }


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def compare_runs(
    results: dict[str, Any], baseline: dict[str, Any], where: str, resamples: int = RESAMPLES, seed: int = SEED
) -> list[dict[str, Any]]:
    """``paired_difference`` rows for the headline metric first, then the other main metrics both define, and
    Dice per class, at the run's headline level. ``UserError`` naming ``where`` (the baseline) when the two
    score different cases or volumes.

    Args:
        results: the run's ``results.json``.
        baseline: the baseline's ``results.json``.
        where: the baseline's path, for messages.
        resamples: bootstrap resamples.
        seed: the bootstrap generator's seed.
    """
    level = headline_level(results)
    rows_key = "volumes" if level == "volume" else "cases"
    run_rows = {r["case"]: r for r in results.get(rows_key, [])}
    base_rows = {r["case"]: r for r in baseline.get(rows_key, [])}
    _check_same(set(run_rows), set(base_rows), where, rows_key)
    summary, other = results.get(SUMMARY_KEYS[level]) or {}, baseline.get(SUMMARY_KEYS[level]) or {}
    first = headline_metric(results)
    metrics = [first, *(m for m in main_metrics(summary) if m != first)]
    metrics += [k for k in summary if k.startswith("dice/")]
    metrics = [m for m in metrics if m in other]
    return [
        paired_difference(
            {i: r.get(m) for i, r in run_rows.items()}, {i: r.get(m) for i, r in base_rows.items()}, m, resamples, seed
        )
        for m in metrics
    ]


def _check_same(run: set[str], base: set[str], where: str, what: str) -> None:
    if run == base:
        return
    only_run, only_base = sorted(run - base), sorted(base - run)

    def few(ids: list[str]) -> str:
        return ", ".join(ids[:3]) + (", ..." if len(ids) > 3 else "") if ids else "none"

    raise UserError(
        f"{where}: the baseline scores other {what} than this run ({len(only_run)} only in this run: "
        f"{few(only_run)}; {len(only_base)} only in the baseline: {few(only_base)}); a paired comparison needs "
        "the same ones: evaluate both on the same ground truth and split"
    )


def load_baseline(source: str | os.PathLike, results: dict[str, Any], report_dir: Path) -> tuple[dict, Path]:
    """The baseline's results and their path: ``source``'s ``results.json`` (``report.find_results``), or,
    for a prediction folder without one, the results of scoring it here against the run's ground truth
    (written to ``report_dir/baseline/results.json``)."""
    path = Path(source)
    try:
        found = find_results(path)
    except UserError:
        if not path.is_dir():
            raise
        try:
            find_predictions(path)
        except UserError:
            raise UserError(
                f"{path}: neither a results.json nor a prediction folder; name the baseline's results.json, its "
                "prediction folder or its run folder"
            ) from None
        target = report_dir / "baseline" / "results.json"
        ids = [r["case"] for r in results["cases"]]
        evaluate(path, results["gt"], target, results.get("layout", "auto"), quiet=True, cases=ids,
                 classes=results.get("classes"))  # fmt: skip
        found = target
    return load_results(found), found
