"""Groups: a BUSI-like dataset in class folders (benign, malignant, normal) is scored per group in results.json,
results.csv and results_groups.csv, and the report shows one row per group."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
from pngs import png

from diffuseg.evaluation.evaluate import evaluate
from diffuseg.evaluation.report import write_report


def square(side: int, size: int = 16) -> np.ndarray:
    out = np.zeros((size, size), np.uint8)
    out[2 : 2 + side, 2 : 2 + side] = 1
    return out


@pytest.fixture
def busi(tmp_path) -> tuple[Path, Path]:
    """Two benign cases predicted exactly, one malignant predicted half, two normal (empty) cases, one of them
    with a false positive."""
    gt, pred = tmp_path / "busi", tmp_path / "pred"
    cases = {
        ("benign", 1): (square(4), square(4)),
        ("benign", 2): (square(6), square(6)),
        ("malignant", 1): (square(8), square(8) * (np.arange(16) < 6)),  # its left half
        ("normal", 1): (np.zeros((16, 16), np.uint8), np.zeros((16, 16), np.uint8)),
        ("normal", 2): (np.zeros((16, 16), np.uint8), square(2)),
    }
    for (group, k), (truth, guess) in cases.items():
        png(gt / group / f"{group} ({k}).png", np.full((16, 16), 40 * k))
        png(gt / group / f"{group} ({k})_mask.png", truth * 255)
        png(pred / f"{group} ({k}).png", guess * 255)
    return gt, pred


def test_groups_in_results_and_csv(busi):
    gt, pred = busi
    res = evaluate(pred, gt, quiet=True)
    assert res["layout"] == "classes" and list(res["groups"]) == ["benign", "malignant", "normal"]
    benign, malignant, normal = (res["groups"][g] for g in ("benign", "malignant", "normal"))
    assert benign["cases"] == ["benign (1)", "benign (2)"] and benign["summary"]["dice"]["mean"] == 1.0
    assert malignant["summary"]["dice"]["mean"] == pytest.approx(2 * 32 / (32 + 64))
    assert normal["summary"]["dice"]["mean"] == pytest.approx(0.5) and normal["summary"]["dice"]["n"] == 2
    # the references per group: on images without a lesion the empty mask is perfect
    assert normal["references"]["empty"]["summary"]["dice"]["mean"] == 1.0
    assert benign["references"]["empty"]["summary"]["dice"]["mean"] == 0.0
    assert benign["references"]["all_foreground"]["summary"]["dice"]["mean"] == pytest.approx(
        (2 * 16 / (16 + 256) + 2 * 36 / (36 + 256)) / 2
    )
    assert json.loads((pred / "results.json").read_text())["groups"] == res["groups"]
    with open(pred / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0])[:2] == ["case", "group"]
    assert {r["case"]: r["group"] for r in rows}["malignant (1)"] == "malignant"
    with open(pred / "results_groups.csv") as fh:
        summary = [r for r in csv.DictReader(fh) if r["metric"] == "dice" and r["level"] == "case"]
    assert [r["group"] for r in summary] == ["(all)", "benign", "malignant", "normal"]
    normal_row = summary[-1]
    assert float(normal_row["mean"]) == pytest.approx(0.5) and normal_row["n"] == "2"
    assert float(normal_row["empty"]) == 1.0 and float(normal_row["all_foreground"]) == 0.0


def test_report_rows_per_group(busi):
    gt, pred = busi
    evaluate(pred, gt, quiet=True)
    text = write_report(pred).read_text()
    table = text[text.index("<h2>Per group</h2>") :]
    table = table[: table.index("</table>")]
    labels = [re.sub("<[^>]+>", "", row.split("</td>")[0]) for row in table.split("<tr><td class='name'>")[1:]]
    assert labels == ["benign", "malignant", "normal", "all cases"]
    assert table.count("<tr>") == 1 + 4
    assert "empty mask: dice" in table and "all-foreground mask: dice" in table
    cases = text[text.index("Every case") :]
    assert "<th>group</th>" in cases and "<td>malignant</td>" in cases
