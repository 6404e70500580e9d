"""The report's uncertainty section: its figures and plain readings from ``results.json``, no section without
samples, and a malformed ``uncertainty`` block refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from pngs import disk, png

from diffuseg.errors import UserError
from diffuseg.evaluation.evaluate import evaluate
from diffuseg.evaluation.report import write_report
from diffuseg.evaluation.uncertainty_report import _case_reading


def lidc_like(root: Path, samples: int) -> Path:
    """Four LIDC-style slices, 3 annotators each, ``samples`` samples (0: none) and a fused mask."""
    gt, pred = root / "gt", root / "pred"
    rng = np.random.default_rng(1)
    for n in range(4):
        nodule = gt / "LIDC-IDRI-0003" / "nodule-0"
        png(nodule / "images" / f"slice-{n}.png", rng.integers(0, 255, (24, 24)))
        for k in range(3):
            png(nodule / f"mask-{k}" / f"slice-{n}.png", disk(24, 12, 12, 2 + k + n) * 255)
        case = f"LIDC-IDRI-0003_nodule-0_slice-{n}"
        members = [disk(24, 12 + rng.integers(-2, 3), 12, 2 + rng.integers(0, 5)) for _ in range(samples)]
        for k, s in enumerate(members):
            png(pred / "samples" / f"{case}_{k:02d}.png", s * 255)
        fused = np.mean(members, axis=0) >= 0.5 if members else disk(24, 12, 12, 3)
        png(pred / f"{case}.png", fused * 255)
    evaluate(pred, gt, quiet=True)
    return pred


def test_section_numbers_and_figures(tmp_path):
    pred = lidc_like(tmp_path, samples=6)
    results = json.loads((pred / "results.json").read_text())
    text = write_report(pred).read_text()
    block = results["uncertainty"]
    assert "<a href='#uncertainty'>" in text and "<h2 id='uncertainty'>Is the uncertainty useful?</h2>" in text
    assert f"AUROC {block['pixel']['auroc']:.3f}" in text
    assert f"Spearman {block['failure']['spearman']:.2f}" in text
    assert f"ECE {block['calibration']['ece_marked']:.3f}" in text
    figures = pred / "report" / "figures"
    assert (figures / "uncertainty.png").is_file() and (figures / "uncertainty_case_00.png").is_file()
    assert "nan" not in text.lower()


def test_no_samples_no_section(tmp_path):
    pred = lidc_like(tmp_path, samples=0)
    assert json.loads((pred / "results.json").read_text())["uncertainty"] == {}
    text = write_report(pred).read_text()
    assert "Is the uncertainty useful?" not in text and "pixel_auroc" not in text


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        (("pixel", "auroc"), "high", "uncertainty.pixel.auroc"),
        (("calibration", "bins"), [[1, 2]], "uncertainty.calibration.bins"),
        (("failure", "curve"), {"coverage": [1.0], "risk": [None], "optimal": [0.0]}, "uncertainty.failure.curve"),
    ],
)
def test_malformed_block_is_one_error(tmp_path, path, value, where):
    pred = lidc_like(tmp_path, samples=3)
    results = json.loads((pred / "results.json").read_text())
    results["uncertainty"][path[0]][path[1]] = value
    (pred / "results.json").write_text(json.dumps(results))
    with pytest.raises(UserError, match=where.replace(".", r"\.")):
        write_report(pred)


def test_case_reading_worse_than_random():
    failure = {
        "cases": 3,
        "spearman": -0.5,
        "aurc": 0.6,
        "aurc_optimal": 0.2,
        "aurc_random": 0.4,
        "curve": {"coverage": [1 / 3, 2 / 3, 1.0], "risk": [0.9, 0.6, 0.4], "optimal": [0.1, 0.2, 0.4]},
    }
    assert "worse than a random order" in _case_reading(failure)
    failure["aurc"] = 0.3
    assert "closes 50 % of the gap" in _case_reading(failure)
