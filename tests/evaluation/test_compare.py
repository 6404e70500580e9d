"""A run against a baseline: the paired bootstrap CI by hand and against SciPy, the comparison in the report,
and the refusal when the two score different cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pngs import png

from diffuseg.cli import main
from diffuseg.errors import UserError
from diffuseg.evaluation.compare import bootstrap_ci, compare_runs, paired_difference
from diffuseg.evaluation.evaluate import evaluate
from diffuseg.evaluation.report import write_report


def test_bootstrap_of_two_cases_by_hand():
    # resampled means of (0, 1) are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4: the 2.5% and 97.5% points are 0, 1
    assert bootstrap_ci(np.array([0.0, 1.0]), resamples=4000) == (0.0, 1.0)
    assert bootstrap_ci(np.full(7, 0.25)) == pytest.approx((0.25, 0.25))


def test_bootstrap_is_seeded_and_agrees_with_scipy():
    from scipy.stats import bootstrap

    d = np.random.default_rng(3).normal(0.05, 0.2, 60)
    assert bootstrap_ci(d) == bootstrap_ci(d)
    assert bootstrap_ci(d, seed=1) != bootstrap_ci(d)
    ref = bootstrap((d,), np.mean, method="percentile", n_resamples=20000, random_state=0).confidence_interval
    low, high = bootstrap_ci(d)
    half = (ref.high - ref.low) / 2
    assert low == pytest.approx(ref.low, abs=0.05 * half) and high == pytest.approx(ref.high, abs=0.05 * half)


def test_paired_difference_counts_and_direction():
    run = {"a": 0.9, "b": 0.5, "c": None, "d": 0.4}
    base = {"a": 0.8, "b": 0.5, "c": 0.7, "d": 0.6}
    row = paired_difference(run, base, "dice")
    assert row["n"] == 3 and row["undefined"] == 1
    assert row["difference"] == pytest.approx((0.1 + 0 - 0.2) / 3)
    assert (row["better"], row["worse"], row["tied"]) == (1, 1, 1)
    hd = paired_difference({"a": 2.0, "b": 5.0}, {"a": 4.0, "b": 5.0}, "hd95")
    assert (hd["better"], hd["worse"], hd["difference"]) == (1, 0, -1.0)  # lower is better


def disk(r: float, size: int = 24) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - 12) ** 2 + (xx - 12) ** 2 <= r * r).astype(np.uint8)


@pytest.fixture
def two_methods(tmp_path) -> tuple[Path, Path, Path]:
    """GT of 6 cases; method A predicts each disk one pixel too small, method B three pixels too small."""
    gt, a, b = tmp_path / "gt", tmp_path / "a", tmp_path / "b"
    for n in range(6):
        png(gt / "images" / f"c{n}.png", np.full((24, 24), 60 + n))
        png(gt / "masks" / f"c{n}.png", disk(5 + n % 3) * 255)
        png(a / f"c{n}.png", disk(4 + n % 3) * 255)
        png(b / f"c{n}.png", disk(2 + n % 3) * 255)
    return gt, a, b


def test_report_against_a_baseline(two_methods, capsys):
    gt, a, b = two_methods
    run = evaluate(a, gt, quiet=True)
    base = evaluate(b, gt, quiet=True)
    rows = compare_runs(run, base, "b")
    assert rows[0]["metric"] == "dice" and [r["metric"] for r in rows[:3]] == ["dice", "iou", "hd95"]
    dice = rows[0]
    per_case = [ra["dice"] - rb["dice"] for ra, rb in zip(run["cases"], base["cases"])]
    assert dice["difference"] == pytest.approx(np.mean(per_case)) and dice["better"] == 6
    assert 0 < dice["low"] <= dice["difference"] <= dice["high"]
    assert main(["report", str(a), "--baseline", str(b / "results.json")]) == 0
    text = (a / "report" / "index.html").read_text()
    assert "Against the baseline" in text and f"{dice['difference']:+.3f}" in text
    assert f"95% CI {dice['low']:+.3f} to {dice['high']:+.3f}" in text


def test_baseline_prediction_folder_is_scored_on_the_run_cases(two_methods):
    gt, a, b = two_methods
    evaluate(a, gt, quiet=True)
    page = write_report(a, baseline=b)  # b has no results.json: scored here, beside the report
    assert (page.parent / "baseline" / "results.json").is_file() and not (b / "results.json").exists()
    assert "Against the baseline" in page.read_text()


def test_baseline_on_other_cases_is_refused(two_methods, tmp_path, capsys):
    gt, a, b = two_methods
    evaluate(a, gt, quiet=True)
    (b / "c5.png").unlink()
    evaluate(b, gt, quiet=True)
    assert main(["report", str(a), "--baseline", str(b), "--out", str(tmp_path / "rep")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {b / 'results.json'}: the baseline scores other cases than this run (1 only in")
    assert "c5" in err and err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "rep").exists()
    with pytest.raises(UserError, match=r"neither a results\.json nor a prediction folder"):
        write_report(a, baseline=gt)
