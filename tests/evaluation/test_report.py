"""``write_report`` on an evaluated LIDC-style folder: the page, its figures, and its failure modes; for a run
with 3 classes: legend and colours, per-class tables, class overlays."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pngs import disk, png

from diffuseg.cli import main
from diffuseg.errors import UserError
from diffuseg.evaluation.evaluate import evaluate
from diffuseg.evaluation.figures import CLASS_COLOURS
from diffuseg.evaluation.report import choose_cases, metric_help, write_report
from diffuseg.evaluation.results_file import find_results


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
    for needle in (
        "Main metrics over cases",
        "Chosen by ged",
        "ged_biased",
        "hungarian_iou",
        "Per-case distributions",
        "<h3>LIDC-IDRI-0007",
    ):
        assert needle in text
    figures = sorted((page.parent / "figures").glob("*.png"))
    assert {f.name for f in figures} >= {"distributions.png", "uncertainty.png", "case_00.png"}
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
    assert "Case figures left out" in text and "Main metrics over cases" in text


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


def test_choose_cases_leaves_out_blank_cases():
    # "e": nothing marked by a member or the majority (Dice 1, both empty); "f": a perfect match that marks pixels
    marks = {"a": 0.2, "b": 0.1, "c": 0.3, "d": 0.2, "e": None, "f": 0.0}
    errors = {"a": 0.1, "b": 0.4, "c": 0.2, "d": 0.3, "e": 0.0, "f": 0.0}
    dice = {"a": 0.6, "b": 0.2, "c": 0.4, "d": 0.5, "e": 1.0, "f": 1.0}
    rows = [{"case": c, "dice": dice[c], "ece_marked": marks[c], "pixel_error_rate": errors[c]} for c in dice]
    assert choose_cases(rows, "dice", 3) == ["f", "d", "b"]
    assert choose_cases([r for r in rows if r["case"] == "e"], "dice", 3) == ["e"]  # the only case is kept
    assert choose_cases([{"case": "x", "dice": 1.0}], "dice", 3) == ["x"]  # results without these metrics


def test_cli_report(evaluated, tmp_path, capsys):
    assert main(["report", str(evaluated / "results.json"), "--out", str(tmp_path / "rep")]) == 0
    assert "report:" in capsys.readouterr().out
    assert (tmp_path / "rep" / "index.html").is_file()


def one_annotator(root: Path, samples: int, uncertainty: str = "variance", recorded: bool = True) -> Path:
    """Paired images and masks (one annotator) and predictions as ``diffuseg predict`` writes them."""
    from diffuseg.config import save_config
    from diffuseg.presets import load_config

    gt, pred = root / "gt", root / "pred"
    rng = np.random.default_rng(1)
    for n in range(5):
        png(gt / "images" / f"case{n}.png", rng.integers(0, 255, (32, 32)))
        png(gt / "masks" / f"case{n}.png", disk(32, 16, 16, 4 + n) * 255)
        members = [disk(32, 16 + rng.integers(-2, 3), 16, 3 + n + rng.integers(0, 3)) for _ in range(samples)]
        for k, s in enumerate(members):
            png(pred / "samples" / f"case{n}_s{k:03d}.png", s * 255)
        p = np.mean(members, axis=0)
        png(pred / f"case{n}.png", (p >= 0.5) * 255)
        Image.fromarray(np.round(p * (1 - p) * 65535).astype(np.uint16)).save(pred / f"case{n}_uncertainty.png")
    if recorded:
        overrides = [f"sample.samples={samples}", "sample.sampler=ddpm", "sample.steps=5"]
        save_config(
            load_config("medsegdiff-b-ddti", [*overrides, f"sample.uncertainty={uncertainty}"]), pred / "config.yaml"
        )
        provenance = {"checkpoint": "/runs/ddti-b/checkpoints/last.ckpt", "step": 40000, "network": "medsegdiff-b"}
        (pred / "prediction.json").write_text(json.dumps({**provenance, "parameters": 6_900_000}))
    evaluate(pred, gt, quiet=True)
    return pred


def test_headline_names_model_checkpoint_and_settings_then_main_metrics(tmp_path):
    text = write_report(one_annotator(tmp_path, samples=6)).read_text()
    head = text[text.index("<section class='headline'>") : text.index("</section>")]
    for needle in (
        "<b>medsegdiff-b</b> (diffusion, 6.90 M parameters)",
        "<code>/runs/ddti-b/checkpoints/last.ckpt</code> at step 40,000",
        "Preset: <b>ablation-ffparser-ddti</b> = <b>medsegdiff-b-ddti</b>",
        "DDPM, 5 steps",
        "6 member(s) fused by staple",
        "uncertainty: variance of the samples",
        ">Dice (headline)<",
        ">IoU<",
        ">HD95 (pixel)<",
    ):
        assert needle in head, needle
    assert ">GED<" not in head and "it needs two or more annotators and this ground truth has 1" in head
    main_table = text[text.index("Main metrics over cases") : text.index("Other metrics over cases")]
    assert [m for m in ("dice", "iou", "hd95", "ged") if f">{m}<" in main_table] == ["dice", "iou", "hd95"]
    assert text.index("Main metrics over cases") < text.index("Other metrics over cases") < text.index("Per-case")


def test_one_annotator_cases_chosen_by_dice_and_figure_in_one_row(tmp_path):
    pred = one_annotator(tmp_path, samples=3, uncertainty="entropy")
    results = json.loads((pred / "results.json").read_text())
    text = write_report(pred).read_text()
    assert "Chosen by dice" in text and "Chosen by ged" not in text
    shown = re.findall(r"<h3>(.*?)</h3>", text)
    assert shown == choose_cases(results["cases"], "dice", 5) and len(shown) == 5
    assert "uncertainty: entropy of the samples, in bits" in text
    with Image.open(pred / "report" / "figures" / "case_00.png") as im:
        width, height = im.size  # image, annotator, fused, uncertainty and 3 samples: one row
    assert width >= 7 * 190 and height < 300


def test_headline_without_a_recorded_run(tmp_path):
    text = write_report(one_annotator(tmp_path, samples=2, recorded=False)).read_text()
    assert "Model: not recorded" in text and "Sampling: not recorded" in text and "Preset: not recorded" in text
    assert "Chosen by dice" in text


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
    for base in ("dice", "iou", "hd95", "diversity"):
        assert f"<th>{base}" in table
    assert "<th>ged" not in table  # one annotator: GED is undefined for every class, so it gets no column
    assert "<th>dice, empty mask</th><th>dice, all-foreground mask</th>" in table  # every class is in every case
    assert table.count(">0.000</td>") == 4 and table.count(">1.000</td>") == 0
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
    res = evaluate(pred, gt, quiet=True, classes="RV=1,Myo=2,LV=3")
    text = write_report(pred).read_text()
    head = text[text.index("<section class='headline'>") : text.index("</section>")]
    # 3D data: the per-volume 3D Dice leads, the per-slice numbers come second
    assert head.index("Per volume (3D), 1 volume(s)") < head.index("Per slice (2D), 3 slice(s)")
    first = head[head.index("Per volume (3D)") :]
    assert re.search(r"Dice \(headline\)</div><div class='value'>([0-9.]+)<", first).group(1) == (
        f"{res['volume_summary']['dice']['mean']:.3f}"
    )
    assert "Per class over volumes (3D)" in text
    assert text.count('<img class="case"') == 3  # every slice's figure, the uncertainty read from the HDF5 file
    assert "no readable dataset" not in text and "left out" not in text.split("Cases")[1][:400]


def _edited(evaluated: Path, tmp_path: Path, edit) -> Path:
    results = json.loads((evaluated / "results.json").read_text())
    edit(results)
    path = tmp_path / "results.json"
    path.write_text(json.dumps(results))
    return path


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (lambda r: r["cases"][0].__setitem__("dice", "0.9"), 'cases[0] (LIDC-IDRI-0007_nodule-0_slice-0) dice is "0.'),
        (lambda r: r["cases"][1].__setitem__("ged", "NaN"), 'cases[1] (LIDC-IDRI-0007_nodule-0_slice-1) ged is "N'),
        (lambda r: r["cases"].__setitem__(0, [1, 2]), "cases[0] is [1, 2]"),
        (lambda r: r["summary"]["dice"].__setitem__("mean", "high"), 'summary.dice.mean is "high"'),
        (lambda r: r["summary"]["dice"].__setitem__("n", "3"), 'summary.dice.n is "3", where a count'),
        (lambda r: r["summary"].__setitem__("dice", "good"), 'summary.dice is "good"'),
        (lambda r: r.__setitem__("volume_summary", "x"), 'volume_summary is "x"'),
        (lambda r: r["calibration"]["all"].__setitem__("ece", "0.1"), 'calibration.all.ece is "0.1"'),
        (lambda r: r["calibration"]["all"].__setitem__("bins", [[1, 2], [3]]), "calibration.all.bins is [[1, 2], [3]]"),
        (lambda r: r.__setitem__("missing", "none"), 'missing is "none"'),
        (lambda r: r.__setitem__("pred", 5), "pred is 5, where a string"),
        (lambda r: r.__setitem__("annotators", "four"), 'annotators is "four"'),
        (lambda r: r["references"]["empty"]["summary"]["dice"].__setitem__("mean", "0"),
         'references.empty.summary.dice.mean is "0"'),
        (lambda r: r.__setitem__("groups", {"benign": {"cases": "a"}}), 'groups.benign.cases is "a"'),
    ],
)  # fmt: skip
def test_report_refuses_results_with_wrong_types(evaluated, tmp_path, edit, where, capsys):
    path = _edited(evaluated, tmp_path, edit)
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: {where}") and err.count("\n") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "report").exists()
