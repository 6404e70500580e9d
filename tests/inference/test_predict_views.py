"""``predict`` with a seed ensemble of checkpoints and with test-time augmentation: members from the right
checkpoint, the members' count, refusals, provenance and the run key, and the CLI from training to evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from diffuseg.checkpoint import metadata, save_atomic
from diffuseg.cli import main
from diffuseg.data.synthetic import SyntheticSpec, write_synthetic
from diffuseg.errors import UserError
from diffuseg.inference.manifest import file_sha256
from diffuseg.inference.predict import predict
from diffuseg.inference.provenance import PROVENANCE_NAME
from diffuseg.presets import load_config
from diffuseg.training.module import module_class

UNET = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}"
NAMES = ("a", "b", "c")

pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoint(path: Path, seed: int, preset: str = "unet-lidc", *extra: str) -> Path:
    """A checkpoint of an untrained tiny network of ``preset`` with weights from ``seed``."""
    config = load_config(preset, ["data.image_size=16", UNET, f"train.seed={seed}", *extra])
    torch.manual_seed(seed)
    module = module_class(config.method)(config)
    save_atomic({"state_dict": module.state_dict(), "diffuseg": metadata(config, 3 + seed, 0)}, path)
    return path


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("seeds")
    return [_checkpoint(root / f"seed-{s}" / "last.ckpt", s) for s in (1, 2)]


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("input")
    rng = np.random.default_rng(0)
    for name in NAMES:
        Image.fromarray(rng.integers(0, 255, (18, 20), dtype=np.uint8)).save(root / f"{name}.png")
    return root


def _png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_ensemble_member_k_comes_from_checkpoint_k_mod_n(seeds, images, tmp_path):
    for i, ckpt in enumerate(seeds):
        predict(ckpt, images, tmp_path / f"one-{i}", save_samples=True)
    assert predict(seeds, images, tmp_path / "both", save_samples=True) == 3
    saved = yaml.safe_load((tmp_path / "both" / "config.yaml").read_text())["sample"]
    assert saved["samples"] == 2 and saved["batch_size"] == 2  # one member per checkpoint by default
    for name in NAMES:
        members = [_png(tmp_path / "both" / "samples" / f"{name}_s{k:03d}.png") for k in range(2)]
        for k in range(2):
            assert np.array_equal(members[k], _png(tmp_path / f"one-{k}" / "samples" / f"{name}_s000.png"))
        assert (tmp_path / "both" / f"{name}_uncertainty.png").is_file()
    a = [_png(tmp_path / "both" / "samples" / f"a_s{k:03d}.png") for k in range(2)]
    assert not np.array_equal(*a)  # the two seeds' members differ
    record = json.loads((tmp_path / "both" / PROVENANCE_NAME).read_text())
    assert [m["sha256"] for m in record["checkpoints"]] == [file_sha256(p) for p in seeds]
    assert [m["step"] for m in record["checkpoints"]] == [4, 5] and "checkpoint" not in record
    manifest = json.loads((tmp_path / "both" / "manifest.json").read_text())
    assert manifest["checkpoint_sha256"] == "+".join(file_sha256(p) for p in seeds)


def test_a_changed_checkpoint_list_is_another_run(seeds, images, tmp_path):
    out = tmp_path / "pred"
    predict(seeds, images, out)
    assert predict(seeds, images, out) == 0  # the same list: every case done
    for other in (seeds[::-1], seeds[:1]):
        with pytest.raises(UserError, match=r"holds another prediction run .* checkpoint \(sha256 \w{12}\.\.\. \+ "):
            predict(other, images, out)
    assert predict(seeds[::-1], images, out, overwrite=True) == 3
    record = json.loads((out / PROVENANCE_NAME).read_text())
    assert [m["sha256"] for m in record["checkpoints"]] == [file_sha256(p) for p in seeds[::-1]]


def test_checkpoints_that_disagree_are_refused_naming_both_files_and_the_field(seeds, images, tmp_path):
    other = {
        "data.image_size": _checkpoint(tmp_path / "big.ckpt", 3, "unet-lidc", "data.image_size=32"),
        "data.classes": _checkpoint(tmp_path / "acdc.ckpt", 3, "unet-acdc"),
        "method": _checkpoint(tmp_path / "anchored.ckpt", 3, "anchored-lidc", "anchored.head_channels=[8, 8, 16]"),
    }
    for field, path in other.items():
        with pytest.raises(UserError, match=rf"^{seeds[0]}, {path}: .* must agree on {field} ") as err:
            predict([seeds[0], path], images, tmp_path / "out")
        assert "\n" not in str(err.value)
    with pytest.raises(UserError, match="the same checkpoint twice"):
        predict([seeds[0], seeds[1], seeds[0]], images, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing written


def test_tta_draws_one_member_per_view_and_refuses_more_for_a_deterministic_model(seeds, images, tmp_path):
    predict(seeds[0], images, tmp_path / "tta", ["sample.tta=true"], save_samples=True)
    saved = yaml.safe_load((tmp_path / "tta" / "config.yaml").read_text())["sample"]
    assert saved["tta"] is True and saved["samples"] == 8
    assert len(list((tmp_path / "tta" / "samples").glob("a_s*.png"))) == 8
    predict(seeds[0], images, tmp_path / "plain")
    assert np.array_equal(_png(tmp_path / "tta" / "samples" / "a_s000.png"), _png(tmp_path / "plain" / "a.png"))
    predict(seeds, images, tmp_path / "four", ["sample.tta=true", "sample.samples=4"])  # fewer than 16 views
    assert yaml.safe_load((tmp_path / "four" / "config.yaml").read_text())["sample"]["samples"] == 4
    with pytest.raises(UserError, match=r"sample.samples=17: a deterministic model has 16 distinct members"):
        predict(seeds, images, tmp_path / "many", ["sample.tta=true", "sample.samples=17"])
    with pytest.raises(UserError, match=r"sample.samples=3: .* has 2 distinct members here \(2 checkpoint"):
        predict(seeds, images, tmp_path / "many", ["sample.samples=3"])
    predict(seeds[0], images, tmp_path / "one", ["sample.samples=3"])  # one checkpoint, no TTA: as before


def test_cli_trains_seeds_then_predicts_with_the_ensemble_and_tta_and_evaluates(tmp_path, capsys):
    data = write_synthetic(tmp_path / "syn", 8, SyntheticSpec(size=16), seed=0, layout="lidc")
    run = tmp_path / "unet"
    tiny = ["data.image_size=16", UNET, "train.batch_size=2", "train.val_every=0", "train.log_every=1"]
    assert (
        main(["train", "unet-lidc", *tiny, "--steps", "2", "--seeds", "2", "--data", str(data), "--out", str(run)]) == 0
    )
    printed = capsys.readouterr().out
    assert f"run folder: {run / 'seed-1'}" in printed and f"run folder: {run / 'seed-2'}" in printed
    seeds = [load_config(run / f"seed-{s}" / "config.yaml").train.seed for s in (1, 2)]
    assert seeds == [1, 2]
    runs = [str(run / "seed-1"), str(run / "seed-2" / "checkpoints" / "last.ckpt")]  # a run folder or a file
    ensemble, tta = tmp_path / "ensemble", tmp_path / "tta"
    assert main(["predict", *runs, str(data), str(ensemble), "--save-samples", "--split", "val"]) == 0
    assert main(["predict", runs[0], str(data), str(tta), "sample.tta=true", "--save-samples", "--split", "val"]) == 0
    for out, members in ((ensemble, 2), (tta, 8)):
        assert main(["evaluate", str(out), str(data)]) == 0
        results = json.loads((out / "results.json").read_text())
        assert results["summary"]["samples"]["mean"] == members
        cases = list(out.glob("*_uncertainty.png"))
        assert cases and len(list((out / "samples").glob("*.png"))) == members * len(cases)
        assert main(["report", str(out)]) == 0
    assert "an ensemble of 2 checkpoints" in (ensemble / "report" / "index.html").read_text()
    assert "test-time augmentation" in (tta / "report" / "index.html").read_text()
    assert main(["train", "unet-lidc", *tiny, "train.seed=4", "--seeds", "2", "--data", str(data)]) == 2
    assert "--seeds sets train.seed" in capsys.readouterr().err


def test_split_of_an_ensemble_needs_one_split(seeds, images, tmp_path, capsys):
    runs = []
    for i, (ckpt, val) in enumerate(zip(seeds, (["a"], ["b"]))):
        run = tmp_path / f"run-{i}"
        (run / "checkpoints").mkdir(parents=True)
        (run / "checkpoints" / "last.ckpt").write_bytes(ckpt.read_bytes())
        (run / "split.json").write_text(json.dumps({"train": {"cases": ["c"]}, "val": {"cases": val}}))
        runs.append(str(run))
    assert main(["predict", *runs, str(images), str(tmp_path / "out"), "--split", "val"]) == 2
    assert "the runs hold different val splits" in capsys.readouterr().err
    assert main(["predict", *runs, str(images), str(tmp_path / "out"), "--split", "val", "--run", runs[1]]) == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["b.png", "b_uncertainty.png"]
