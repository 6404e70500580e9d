"""Hostile inputs beyond datasets, through the command line: image files given to predict one by one, bad
checkpoints and output folders, bad predictions and ground truth for evaluate, bad results for report, classes
that contradict the labels, and a disk that fills up while predict or train writes. Each refusal: exit code 2,
exactly one ``error:`` line naming the file and the problem, no traceback, nothing written."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from diffuseg.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile import SIZE, Unblocker, disc, encoded, fifo, frames, grey, h5, link, png, refused, written

pytestmark = pytest.mark.usefixtures("one_thread")


def _one(tmp: Path, name: str = "a.png") -> Path:
    return png(tmp / "in" / name, grey())


# ------------------------------------------------------------------------------ predict: files named one by one
FILES = {
    "/dev/zero": (lambda t: Path("/dev/zero"), "a character device, not a regular file"),
    "fifo": (lambda t: fifo(t / "in" / "z.png"), "a named pipe (FIFO), not a regular file"),
    "dangling link": (lambda t: link(t / "in" / "z.png", t / "gone.png"), "a dangling link"),
    "link to /dev/zero": (lambda t: link(t / "in" / "z.png", "/dev/zero"), "a link to /dev/zero, a character device"),
    "multi-page tiff": (lambda t: frames(t / "in" / "z.tif"), "holds 3 frames"),
    "animated gif": (lambda t: frames(t / "in" / "z.gif", 2), "holds 2 frames"),
    "png named .nii.gz": (lambda t: written(t / "in" / "z.nii.gz", encoded("PNG")), "holds PNG data but is named"),
    "bmp named .png": (lambda t: written(t / "in" / "z.png", encoded("BMP")), "holds BMP data but is named .png"),
    "missing": (lambda t: t / "in" / "nothing.png", "input not found"),
    "text file": (lambda t: written(t / "in" / "notes.txt", b"hello"), "not an image file this tool reads"),
    "empty png": (lambda t: written(t / "in" / "z.png", b""), "unreadable or corrupt"),
}


@pytest.mark.parametrize("name", list(FILES))
def test_predict_refuses_a_bad_image_file_named_on_the_command_line(name, untrained_checkpoint, tmp_path, capsys):
    build, problem = FILES[name]
    good, bad = _one(tmp_path), build(tmp_path)
    out = tmp_path / "out"
    with Unblocker(tmp_path):
        assert main(["predict", str(untrained_checkpoint), str(good), str(bad), str(out)]) == 2
    refused(capsys.readouterr().err, str(bad), problem)
    assert not out.exists()


# -------------------------------------------------------------------------------- predict: checkpoint and output
def _cut_checkpoint(tmp: Path, checkpoint: Path) -> Path:
    data = checkpoint.read_bytes()
    return written(tmp / "cut.ckpt", data[: len(data) // 2])


def _pickled(tmp: Path) -> Path:
    path = tmp / "pickled.ckpt"
    torch.save({"payload": Path("x")}, path)  # a Python object: never unpickled
    return path


def _too_small(tmp: Path) -> Path:
    """A MedSegDiff-B checkpoint at 32 px whose 4-channel stages cannot take one image at a time."""
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.presets import load_config
    from diffuseg.training.module import DiffusionModule

    options = "model.options={base_channels: 4, dynamic_conditioning: true, ff_parser: true}"
    config = load_config("medsegdiff-b-ddti", ["data.image_size=32", options])
    path = tmp / "small.ckpt"
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path


def _diverged(tmp: Path, checkpoint: Path) -> Path:
    from diffuseg.checkpoint import read_checkpoint, save_atomic

    ckpt = read_checkpoint(checkpoint)
    name = next(k for k, v in ckpt["state_dict"].items() if k.startswith("ema.") and v.is_floating_point())
    ckpt["state_dict"][name] = torch.full_like(ckpt["state_dict"][name], float("nan"))  # valid checksums
    save_atomic(ckpt, tmp / "diverged.ckpt")
    return tmp / "diverged.ckpt"


CHECKPOINTS = {
    "a folder": (lambda t, c: (t / "run").mkdir() or t / "run", "is not a file (expected a checkpoint"),
    "a fifo": (lambda t, c: fifo(t / "x.ckpt"), "is not a file"),
    "empty": (lambda t, c: written(t / "x.ckpt", b""), "the file is empty"),
    "text": (lambda t, c: written(t / "x.ckpt", b"garbage\n"), "not a readable PyTorch checkpoint"),
    "cut in half": (lambda t, c: _cut_checkpoint(t, c), "corrupt or truncated checkpoint"),
    "pickled objects": (lambda t, c: _pickled(t), "holds pickled Python objects that are not loaded"),
    "image size too small": (lambda t, c: _too_small(t), "the smallest image size it supports is 64"),
    "missing": (lambda t, c: t / "none.ckpt", "checkpoint not found"),
    "NaN weights": (_diverged, "NaN or infinite value(s)"),
}


@pytest.mark.parametrize("name", list(CHECKPOINTS))
def test_predict_refuses_a_bad_checkpoint(name, untrained_checkpoint, tmp_path, capsys):
    build, problem = CHECKPOINTS[name]
    bad, good, out = build(tmp_path, untrained_checkpoint), _one(tmp_path), tmp_path / "out"
    assert main(["predict", str(bad), str(good), str(out)]) == 2
    refused(capsys.readouterr().err, str(bad), problem)
    assert not out.exists()


def test_predict_refuses_an_output_inside_its_input_or_on_a_file(untrained_checkpoint, tmp_path, capsys):
    good = _one(tmp_path)
    assert main(["predict", str(untrained_checkpoint), str(good.parent), str(good.parent / "out")]) == 2
    refused(capsys.readouterr().err, str(good.parent / "out"), "must not be inside the input folder")
    blocker = written(tmp_path / "blocker", b"a file")
    assert main(["predict", str(untrained_checkpoint), str(good), str(blocker)]) == 2
    refused(capsys.readouterr().err, str(blocker), "blocker")
    assert blocker.read_bytes() == b"a file" and not (good.parent / "out").exists()


# ----------------------------------------------------------------------------------------------------- evaluate
def _ground_truth(tmp: Path) -> tuple[Path, Path]:
    gt, pred = tmp / "gt", tmp / "pred"
    for name in ("a", "z"):
        png(gt / "images" / f"{name}.png", grey())
        png(gt / "masks" / f"{name}.png", disc())
    png(pred / "a.png", disc())
    return gt, pred


PREDICTIONS = {
    "fifo": (lambda gt, pred: fifo(pred / "z.png"), "a named pipe (FIFO)"),
    "dangling link": (lambda gt, pred: link(pred / "z.png", pred.parent / "gone.png"), "a dangling link"),
    "/dev/zero": (lambda gt, pred: link(pred / "z.png", "/dev/zero"), "a character device"),
    "multi-page tiff": (lambda gt, pred: frames(pred / "z.tif"), "holds 3 frames"),
    "jpeg named .png": (lambda gt, pred: written(pred / "z.png", encoded("JPEG")), "holds JPG data"),
    "truncated": (lambda gt, pred: written(pred / "z.png", encoded("PNG")[:40]), "unreadable or corrupt"),
    "another size": (lambda gt, pred: png(pred / "z.png", disc(2, size=8)), "size 8x8 differs"),
    "not binary": (lambda gt, pred: png(pred / "z.png", np.arange(256, dtype=np.uint8).reshape(16, 16)), "not binary"),
    "gt mask fifo": (lambda gt, pred: _gt_mask(gt, pred, fifo), "a named pipe (FIFO)"),
    "gt mask 3 frames": (lambda gt, pred: _gt_mask(gt, pred, lambda p: frames(p.with_suffix(".tif"))), "3 frames"),
}


def _gt_mask(gt: Path, pred: Path, make) -> Path:
    png(pred / "z.png", disc())
    (gt / "masks" / "z.png").unlink()
    return make(gt / "masks" / "z.png")


@pytest.mark.parametrize("name", list(PREDICTIONS))
def test_evaluate_refuses_a_bad_prediction_or_truth_by_name(name, tmp_path, capsys):
    build, problem = PREDICTIONS[name]
    gt, pred = _ground_truth(tmp_path)
    bad = build(gt, pred)
    with Unblocker(tmp_path):
        assert main(["evaluate", str(pred), str(gt)]) == 2
    refused(capsys.readouterr().err, str(bad), problem)
    assert not (pred / "results.json").exists() and not (pred / "results.csv").exists()


# ------------------------------------------------------------------------------------------------------- report
RESULTS = {
    "not json": (b"{cases: ", "not a readable results.json"),
    "a list": (b"[1, 2]", "not a results.json written by `diffuseg evaluate`"),
    "strings for numbers": (b'{"summary": {"dice": "high"}, "cases": [{"case": "a", "dice": "x"}]}', "dice"),
    "binary junk": (bytes(range(256)), "not a readable results.json"),
}


@pytest.mark.parametrize("name", list(RESULTS))
def test_report_refuses_bad_results_by_name(name, tmp_path, capsys):
    data, problem = RESULTS[name]
    results = written(tmp_path / "results.json", data)
    assert main(["report", str(results), "--out", str(tmp_path / "page" / "index.html")]) == 2
    refused(capsys.readouterr().err, str(results), problem)
    assert not (tmp_path / "page").exists()


# ------------------------------------------------------------------------------------------------------ classes
def _label_maps(root: Path, values: np.ndarray, name: str = "z.png") -> Path:
    for stem in ("a", "b"):
        png(root / "images" / f"{stem}.png", grey())
        png(root / "masks" / f"{stem}.png", (disc() > 0).astype(np.uint8))
    png(root / "images" / "z.png", grey())
    path = root / "masks" / name
    if name.endswith(".jpg"):
        from PIL import Image

        Image.fromarray(values).save(path)
        return path
    return png(path, values)


CLASSES = {
    "undeclared value": (lambda r: _label_maps(r, (disc() > 0).astype(np.uint8) * 5), "value(s) {5} not declared"),
    "jpeg label map": (lambda r: _label_maps(r, (disc() > 0).astype(np.uint8), "z.jpg"), "a JPEG label map cannot"),
}


@pytest.mark.parametrize("name", list(CLASSES))
def test_label_maps_that_contradict_the_classes_are_named(name, tmp_path, capsys):
    build, problem = CLASSES[name]
    bad = build(tmp_path / "data")
    assert main(["verify", str(tmp_path / "data"), "--classes", "RV=1,Myo=2,LV=3"]) == 2
    refused(capsys.readouterr().err, str(bad), problem)


def test_an_hdf5_volume_of_text_labels_is_named(tmp_path, capsys):
    root = tmp_path / "data"
    for i in range(2):
        h5(root / "data" / f"p{i}_frame01_slice_1.h5", grey(i) / 255.0, (disc() > 0).astype(np.uint8))
    bad = h5(root / "data" / "p2_frame01_slice_1.h5", grey() / 255.0, np.array([b"x"] * SIZE))
    assert main(["verify", str(root)]) == 2
    refused(capsys.readouterr().err, str(bad), "dataset 'label' holds |S1 values, not numbers")
