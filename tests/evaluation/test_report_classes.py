"""``write_report`` for a run with 3 classes: legend and colours, per-class tables, class overlays."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from PIL import Image

from diffuseg.evaluation.evaluate import evaluate
from diffuseg.evaluation.report import write_report
from diffuseg.evaluation.report_classes import CLASS_COLOURS


def png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def heart(size: int, shift: int) -> np.ndarray:
    """A ring of Myo (2) around an LV disk (3), with an RV blob (1) beside it."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2 - shift)
    out = np.zeros((size, size), np.uint8)
    out[r <= 7] = 2
    out[r <= 4] = 3
    out[(np.abs(yy - size / 2) < 4) & (xx < size / 2 - 9 + shift) & (xx > 2)] = 1
    return out


def test_report_with_three_classes(tmp_path):
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    rng = np.random.default_rng(0)
    for n in range(3):
        png(gt / "images" / f"c{n}.png", rng.integers(0, 255, (32, 32)))
        png(gt / "masks" / f"c{n}.png", heart(32, 0))
        samples = [heart(32, int(s)) for s in rng.integers(-2, 3, 4)]
        for k, s in enumerate(samples):
            png(pred / "samples" / f"c{n}_s{k:03d}.png", s)
        png(pred / f"c{n}.png", heart(32, n - 1))
    res = evaluate(pred, gt, quiet=True, classes="RV=1,Myo=2,LV=3")
    assert res["class_names"] == ["RV", "Myo", "LV"]
    page = write_report(pred)
    text = page.read_text()
    assert "class='legend'" in text
    for k, name in enumerate(("RV", "Myo", "LV")):
        assert re.search(rf"background:{CLASS_COLOURS[k]}' title='{CLASS_COLOURS[k]}'></span>{name}</span>", text)
    assert "Per class over cases" in text and "mean over classes" in text
    table = text[text.index("Per class over cases") :]
    table = table[: table.index("</table>")]
    assert table.count("<tr>") == 1 + 3 + 1  # header, 3 classes, their mean
    for base in ("dice", "iou", "hd95", "ged"):
        assert f"<th>{base}" in table
    # the summary tables do not repeat the per-class keys
    other = text[text.index("Other metrics over cases") :]
    assert "dice/RV" not in other[: other.index("</table>")]
    figures = sorted((page.parent / "figures").glob("case_*.png"))
    assert figures and "Each class in its colour" in text
    assert "dice/LV" in text  # the case lines name each class's Dice
    with Image.open(figures[0]) as im:
        pixels = np.asarray(im.convert("RGB")).reshape(-1, 3)
    for colour in CLASS_COLOURS[:3]:  # the legend patches are drawn in the exact colours
        rgb = np.array([int(colour[i : i + 2], 16) for i in (1, 3, 5)])
        assert (np.abs(pixels.astype(int) - rgb).sum(1) == 0).any(), colour


def test_report_of_hdf5_volumes_with_uncertainty(tmp_path):
    import h5py

    gt, pred = tmp_path / "acdc", tmp_path / "pred"
    (gt / "data").mkdir(parents=True)
    pred.mkdir()
    label = np.stack([heart(32, 0), heart(32, 1), np.zeros((32, 32), np.uint8)])
    with h5py.File(gt / "data" / "p1_frame01.h5", "w") as f:
        f["image"] = np.random.default_rng(0).random((3, 32, 32)).astype(np.float32)
        f["label"] = label
    with h5py.File(pred / "p1_frame01.h5", "w") as f:
        f["label"] = np.stack([heart(32, 1), heart(32, 1), np.zeros((32, 32), np.uint8)])
    with h5py.File(pred / "p1_frame01_uncertainty.h5", "w") as f:
        f["uncertainty"] = np.full((3, 32, 32), 0.25, np.float32)
    evaluate(pred, gt, quiet=True, classes="RV=1,Myo=2,LV=3")
    text = write_report(pred).read_text()
    assert "Per class over volumes (3D)" in text
    assert text.count('<img class="case"') == 3  # every slice's figure, the uncertainty read from the HDF5 file
    assert "no readable dataset" not in text and "left out" not in text.split("Cases")[1][:400]
