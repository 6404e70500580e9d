"""``write_report`` on an evaluated LIDC-style folder: the page, its figures, and its failure modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuseg.cli import main
from diffuseg.errors import UserError
from diffuseg.evaluation.evaluate import evaluate
from diffuseg.evaluation.report import choose_cases, find_results, metric_help, write_report


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def disk(size: int, cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    return ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r).astype(np.uint8)


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory) -> Path:
    """Three LIDC-style slices with 4 annotators, 6 samples each, fused masks and uncertainty maps."""
    root = tmp_path_factory.mktemp("report")
    gt, pred = root / "gt", root / "pred"
    rng = np.random.default_rng(0)
    for n in range(3):
        nodule = gt / "LIDC-IDRI-slices" / "LIDC-IDRI-0007" / "nodule-0"
        png(nodule / "images" / f"slice-{n}.png", rng.integers(0, 255, (24, 24)))
        for k in range(4):
            png(nodule / f"mask-{k}" / f"slice-{n}.png", disk(24, 12, 12, 3 + k + n) * 255 * (k < 3))
        case = f"LIDC-IDRI-0007_nodule-0_slice-{n}"
        samples = [disk(24, 12 + rng.integers(-2, 3), 12, 3 + rng.integers(0, 4)) for _ in range(6)]
        for k, s in enumerate(samples):
            png(pred / "samples" / f"{case}_{k:02d}.png", s * 255)
        p = np.mean(samples, axis=0)
        png(pred / f"{case}.png", (p >= 0.5) * 255)
        png(pred / f"{case}_uncertainty.png", p * (1 - p) * 4 * 255)
    evaluate(pred, gt, quiet=True)
    return pred


def test_report_page_and_figures(evaluated):
    page = write_report(evaluated)
    assert page == evaluated / "report" / "index.html"
    text = page.read_text()
    for needle in ("Summary over cases", "ged_biased", "hungarian_iou", "Per-case distributions", "<h3>LIDC-IDRI-0007"):
        assert needle in text
    figures = sorted((page.parent / "figures").glob("*.png"))
    assert {f.name for f in figures} >= {"distributions.png", "calibration.png", "case_00.png"}
    with Image.open(page.parent / "figures" / "case_00.png") as im:
        assert im.size[0] > 600  # image, 4 annotators, 6 samples, fused, uncertainty: two rows of 8
    assert "nan" not in text.lower().replace("nanoseconds", "")


def test_report_to_html_path_and_chosen_case(evaluated, tmp_path):
    page = write_report(
        evaluated / "results.json", tmp_path / "r" / "page.html", cases=["LIDC-IDRI-0007_nodule-0_slice-1"]
    )
    text = page.read_text()
    assert page.name == "page.html" and (page.parent / "figures" / "case_00.png").is_file()
    assert text.count("<h3>") == 1


def test_report_without_prediction_folder(evaluated, tmp_path):
    results = (evaluated / "results.json").read_text().replace(str(evaluated.resolve()), str(tmp_path / "gone"))
    (tmp_path / "results.json").write_text(results)
    text = write_report(tmp_path / "results.json").read_text()
    assert "Case figures left out" in text and "Summary over cases" in text


def test_find_results_errors(tmp_path):
    with pytest.raises(UserError, match=r"no results\.json here"):
        find_results(tmp_path)
    with pytest.raises(UserError, match="no such"):
        find_results(tmp_path / "nope")
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(UserError, match=r"not a readable results\.json"):
        write_report(tmp_path)
    (tmp_path / "results.json").write_text('{"cases": 3}')
    with pytest.raises(UserError, match=r"not a results\.json written by"):
        write_report(tmp_path)


def test_choose_cases_orders_by_metric():
    rows = [{"case": c, "ged": g} for c, g in zip("abcdef", (0.5, 0.1, 0.9, 0.3, 0.7, None))]
    assert choose_cases(rows, "ged", 3) == ["b", "a", "c"]  # best, median, worst; lower is better
    assert choose_cases([{"case": "x", "dice": 0.2}, {"case": "y", "dice": 0.8}], "dice", 5) == ["y", "x"]
    assert "16 samples" in metric_help("ged_biased_16")


def test_cli_report(evaluated, tmp_path, capsys):
    assert main(["report", str(evaluated / "results.json"), "--out", str(tmp_path / "rep")]) == 0
    assert "report:" in capsys.readouterr().out
    assert (tmp_path / "rep" / "index.html").is_file()
