"""Prediction runs: manifest, resume, refusing or overwriting another run, sharding, output names, progress."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg.errors import DatasetError, UserError
from diffuseg.evaluation.evaluate import evaluate
from diffuseg.inference import predict as predict_module
from diffuseg.inference.manifest import completeness
from diffuseg.inference.predict import predict
from diffuseg.inference.writers import PredictionWriter
from diffuseg.presets import load_config

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "sample.steps=2",
    "sample.samples=3",
    "sample.batch_size=3",
]
NAMES = ("a", "b", "c", "d", "e")


def _checkpoint(path: Path, seed: int) -> Path:
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.training.module import DiffusionModule

    config = load_config("lidc-central", TINY)
    torch.manual_seed(seed)
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _checkpoint(tmp_path_factory.mktemp("ckpt") / "last.ckpt", 0)


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("input")
    rng = np.random.default_rng(0)
    for name in NAMES:
        Image.fromarray(rng.integers(0, 255, (18, 20), dtype=np.uint8)).save(root / f"{name}.png")
    return root


def _files(folder: Path, manifests: bool = True) -> dict[str, bytes]:
    """Every file under ``folder`` by relative path (the manifests left out unless ``manifests``)."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and (manifests or not p.name.startswith("manifest"))
    }


@pytest.fixture(scope="module")
def reference(checkpoint: Path, images: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "pred"
    assert predict(checkpoint, images, out, save_samples=True) == len(NAMES)
    return out


def test_manifest_records_the_run(reference: Path, checkpoint: Path) -> None:
    from diffuseg.inference.manifest import file_sha256

    m = json.loads((reference / "manifest.json").read_text())
    assert m["complete"] and m["checkpoint_sha256"] == file_sha256(checkpoint)
    assert m["cases"] == list(NAMES) and m["config"]["sample"]["samples"] == 3
    assert m["part_cases"]["a"]["done"] and "a_uncertainty.png" in m["part_cases"]["a"]["files"]
    assert m["part_cases"]["a"]["source"].endswith("a.png")
    assert not list(reference.glob(".*"))  # no lock or temporary file left


def test_nothing_written_when_the_run_is_refused(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="fusion"):
        predict(checkpoint, images, tmp_path / "bad", ["sample.fusion=median"])
    with pytest.raises(UserError, match="inside the input"):
        predict(checkpoint, images, images)
    assert not (tmp_path / "bad").exists() and not (images / "config.yaml").exists()


def test_interrupted_run_is_incomplete_then_resumes_identically(
    checkpoint: Path, images: Path, reference: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "pred"
    original = PredictionWriter.write
    calls = []

    def dying(self, case, *args):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(case.case_id)
        return original(self, case, *args)

    with monkeypatch.context() as m:
        m.setattr(PredictionWriter, "write", dying)
        with pytest.raises(KeyboardInterrupt):
            predict(checkpoint, images, out, save_samples=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and [c for c, v in manifest["part_cases"].items() if v["done"]] == ["a", "b"]
    with pytest.raises(UserError, match=r"incomplete \(2 of 5"):
        evaluate(out, images)
    assert predict(checkpoint, images, out, save_samples=True) == 3  # a and b are skipped
    assert _files(out) == _files(reference)
    assert predict(checkpoint, images, out, save_samples=True) == 0


def test_resume_wrote_and_evaluate_count_volumes_not_slices(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import nibabel as nib

    from diffuseg.cli import main

    volumes, out = tmp_path / "volumes", tmp_path / "pred"
    volumes.mkdir()
    rng = np.random.default_rng(1)
    for name in ("v1", "v2"):  # two volumes of 3 slices each: 6 items, 2 cases
        nib.save(nib.Nifti1Image(rng.random((18, 20, 3)).astype(np.float32), np.eye(4)), volumes / f"{name}.nii.gz")
    original = PredictionWriter.write
    calls = []

    def dying(self, case, *args):
        if len(calls) == 4:  # v1's 3 slices written (v1 done), then 1 slice of v2
            raise KeyboardInterrupt
        calls.append(case.case_id)
        return original(self, case, *args)

    with monkeypatch.context() as m:
        m.setattr(PredictionWriter, "write", dying)
        assert main(["predict", str(checkpoint), str(volumes), str(out)]) == 130  # interrupted
    with pytest.raises(UserError, match=r"incomplete \(1 of 2 cases done"):  # volumes, not their 6 slices
        evaluate(out, volumes)
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(volumes), str(out)]) == 0
    captured = capsys.readouterr()
    assert "resuming: 1 of 2 case(s) already done" in captured.err
    assert f"wrote 1 case(s) to {out}" in captured.out
    names = ["v1.nii.gz", "v1_uncertainty.nii.gz", "v2.nii.gz", "v2_uncertainty.nii.gz"]
    assert sorted(p.name for p in out.glob("v*.nii.gz")) == names


def test_a_manifest_without_volumes_is_read_and_resumed(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """Manifests written before the run key recorded volumes: evaluate's check reads them, predict resumes them."""
    import nibabel as nib

    from diffuseg.cli import main

    volumes, out = tmp_path / "volumes", tmp_path / "pred"
    volumes.mkdir()
    nib.save(nib.Nifti1Image(np.random.default_rng(2).random((18, 20, 2)).astype(np.float32), np.eye(4)),
             volumes / "v1.nii.gz")  # fmt: skip
    assert main(["predict", str(checkpoint), str(volumes), str(out)]) == 0
    (manifest,) = out.glob("manifest*.json")
    record = json.loads(manifest.read_text())
    del record["volumes"]
    manifest.write_text(json.dumps(record))
    assert completeness(out) == (2, 2)  # such a manifest counts the slices, not the volume
    capsys.readouterr()
    assert main(["predict", str(checkpoint), str(volumes), str(out)]) == 0
    assert "already done" in capsys.readouterr().err


def test_parts_with_and_without_volumes_count_volumes(checkpoint: Path, tmp_path: Path) -> None:
    """A part resumed by this version records volumes, another written before does not: one run, counted by
    volume."""
    import nibabel as nib

    from diffuseg.cli import main

    volumes, out = tmp_path / "volumes", tmp_path / "pred"
    volumes.mkdir()
    for name in ("v1", "v2"):
        image = np.random.default_rng(3).random((18, 20, 2)).astype(np.float32)
        nib.save(nib.Nifti1Image(image, np.eye(4)), volumes / f"{name}.nii.gz")
    for part in ("0", "1"):
        args = ["predict", str(checkpoint), str(volumes), str(out), "--num-parts", "2", "--part-id", part]
        assert main(args) == 0
    first = sorted(out.glob("manifest*.json"))[0]
    record = json.loads(first.read_text())
    del record["volumes"]
    first.write_text(json.dumps(record))
    assert completeness(out) == (2, 2)


def test_another_run_is_refused_naming_the_differences_unless_overwrite(
    checkpoint: Path, images: Path, tmp_path: Path
) -> None:
    out = tmp_path / "pred"
    predict(checkpoint, images, out, save_samples=True)
    with pytest.raises(UserError, match=r"sample\.seed \(0 there, 1 now\)"):
        predict(checkpoint, images, out, ["sample.seed=1"], save_samples=True)
    other = _checkpoint(tmp_path / "other.ckpt", 1)
    with pytest.raises(UserError, match="checkpoint \\(sha256"):
        predict(other, images, out, save_samples=True)
    with pytest.raises(UserError, match="--save-samples"):
        predict(checkpoint, images, out)
    assert predict(checkpoint, images, out, ["sample.seed=1"], overwrite=True) == len(NAMES)
    assert not (out / "samples").exists()  # the old run's members are gone with it
    fresh = tmp_path / "fresh"
    predict(checkpoint, images, fresh, ["sample.seed=1"])
    assert _files(out) == _files(fresh)


def test_files_of_an_unrecorded_run_are_not_written_over(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "c.png").write_bytes(b"not from this run")
    with pytest.raises(UserError, match=r"c\.png: exists, and no manifest"):
        predict(checkpoint, images, out)
    assert not (out / "config.yaml").exists()
    predict(checkpoint, images, out, overwrite=True)
    assert (out / "notes.txt").read_text() == "mine"


def test_parts_together_equal_the_single_run(checkpoint: Path, images: Path, reference: Path, tmp_path: Path) -> None:
    out = tmp_path / "parts"
    assert predict(checkpoint, images, out, save_samples=True, num_parts=2, part_id=1) == 2  # b, d
    with pytest.raises(UserError, match=r"incomplete \(2 of 5"):
        evaluate(out, images)
    assert predict(checkpoint, images, out, save_samples=True, num_parts=2, part_id=0) == 3  # a, c, e
    assert _files(out, manifests=False) == _files(reference, manifests=False)
    part = json.loads((out / "manifest.part-1-of-2.json").read_text())
    assert list(part["part_cases"]) == ["b", "d"] and part["complete"]
    assert predict(checkpoint, images, out, save_samples=True) == 0  # the single run finds every case done
    with pytest.raises(UserError, match="part-id"):
        predict(checkpoint, images, out, num_parts=2, part_id=2)


def test_a_held_part_lock_refuses_a_second_writer(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    from diffuseg.runlock import folder_lock

    out = tmp_path / "pred"
    with (
        folder_lock(out, "test", predict_module.part_lock_name(0, 1)),
        pytest.raises(UserError, match="another predict part 0 of 1 is writing here"),
    ):
        predict(checkpoint, images, out)
    predict(checkpoint, images, out)


def _pngs(root: Path, names: list[str]) -> Path:
    root.mkdir(parents=True)
    for i, name in enumerate(names):
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(root / name)
    return root


def test_clashing_names_are_refused_naming_both(checkpoint: Path, tmp_path: Path) -> None:
    src = _pngs(tmp_path / "x", ["x.png", "x_uncertainty.png"])
    with pytest.raises(UserError, match=r"x_uncertainty\.png and .*x\.png.*uncertainty"):
        predict(checkpoint, src, tmp_path / "out-x")
    src = tmp_path / "paired"
    _pngs(src / "images", ["A.png", "a.png"])
    _pngs(src / "masks", ["A.png", "a.png"])
    with pytest.raises(UserError, match=r"A\.png and .*a\.png: both would be predicted as a\.\*"):
        predict(checkpoint, src, tmp_path / "out-a")  # one file on macOS and Windows
    assert not (tmp_path / "out-x").exists() and not (tmp_path / "out-a").exists()


def test_repeated_stems_get_distinct_outputs(checkpoint: Path, tmp_path: Path) -> None:
    src = _pngs(tmp_path / "in", ["a.png", "a_2.png"])
    Image.fromarray(np.full((8, 8), 200, np.uint8)).save(src / "a.bmp")
    out = tmp_path / "out"
    assert predict(checkpoint, src, out) == 3
    sources = {
        c: Path(v["source"]).name for c, v in json.loads((out / "manifest.json").read_text())["part_cases"].items()
    }
    assert sources == {"a": "a.bmp", "a_3": "a.png", "a_2": "a_2.png"}
    assert sorted(p.name for p in out.glob("*.png")) == [
        "a.png",
        "a_2.png",
        "a_2_uncertainty.png",
        "a_3.png",
        "a_3_uncertainty.png",
        "a_uncertainty.png",
    ]


def test_paired_layout_reports_duplicate_stems(tmp_path: Path) -> None:
    from diffuseg.data.formats import open_dataset

    _pngs(tmp_path / "d" / "images", ["x.png", "y.png"])
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "d" / "images" / "x.bmp")
    _pngs(tmp_path / "d" / "masks", ["x.png", "y.png"])
    reader = open_dataset(tmp_path / "d")
    assert any("x.bmp and" in p and "x.png" in p and "stem x" in p for p in reader.problems), reader.problems
    with pytest.raises(DatasetError, match="two images with the stem x"):
        from diffuseg.data.verify import verify_dataset

        verify_dataset(tmp_path / "d")


def test_progress_counts_member_steps() -> None:
    from diffuseg.inference.ensemble import sample_ensembles
    from diffuseg.methods import build_network, build_process, make_draw

    config = load_config("lidc-central", [*TINY, "sample.steps=4", "sample.samples=5", "sample.batch_size=2"])
    net = build_network(config).eval()
    counted: list[int] = []
    draw = make_draw(config, net, build_process(config), progress=counted.append)
    cases = [(f"c{i}", torch.rand(1, 16, 16)) for i in range(3)]
    assert len(list(sample_ensembles(draw, cases, config.sample))) == 3
    assert sum(counted) == 3 * 5 * 4 and len(counted) > 3 * 4  # moves within a case, one call at a time


def test_overwrite_deletes_only_inside_the_folder(tmp_path: Path) -> None:
    from diffuseg.inference.manifest import Manifest, RunKey

    key = RunKey("0" * 64, {}, False, ("a",))
    m = Manifest(tmp_path / "out" / "manifest.json", key, 0, 1, cases={"a": {"done": True, "files": []}})
    m.cases["a"]["files"] = ["a.png", "../outside.png", "/etc/passwd", "samples/a_s000.png"]
    assert m.files() == [tmp_path / "out" / "a.png", tmp_path / "out" / "samples" / "a_s000.png"]
    m.save()
    assert Manifest.load(m.path).key == key and Manifest.load(m.path).complete
    (tmp_path / "out" / "manifest.json").write_text("{ not json")
    with pytest.raises(UserError, match="unreadable prediction manifest"):
        Manifest.load(m.path)


def test_an_input_replaced_under_its_name_is_predicted_again(
    checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import shutil

    src = tmp_path / "in"
    shutil.copytree(images, src)
    out = tmp_path / "pred"
    assert predict(checkpoint, src, out, save_samples=True) == len(NAMES)
    assert json.loads((out / "manifest.json").read_text())["part_cases"]["b"]["inputs"][0]["sha256"]
    (src / "b.png").write_bytes((images / "c.png").read_bytes())  # another scan under the same name
    capsys.readouterr()
    assert predict(checkpoint, src, out, save_samples=True) == 1
    assert "b.png: changed since predicted" in capsys.readouterr().err
    fresh = tmp_path / "fresh"
    predict(checkpoint, src, fresh, save_samples=True)
    assert _files(out, manifests=False) == _files(fresh, manifests=False)  # b's files are the new scan's
    assert predict(checkpoint, src, out, save_samples=True) == 0


def test_an_input_with_its_old_mtime_back_is_still_seen_changed(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    import os
    import shutil

    src = tmp_path / "in"
    shutil.copytree(images, src)
    out = tmp_path / "pred"
    predict(checkpoint, src, out)
    record = json.loads((out / "manifest.json").read_text())["part_cases"]["a"]["inputs"][0]
    data = bytearray((src / "a.png").read_bytes())
    pixels = np.asarray(Image.open(src / "a.png")).copy()
    pixels[0, 0] ^= 0xFF
    Image.fromarray(pixels).save(src / "a.png")
    os.utime(src / "a.png", ns=(record["mtime_ns"], record["mtime_ns"]))  # mtime forged back; ctime moves on
    assert bytes(data) != (src / "a.png").read_bytes()
    assert predict(checkpoint, src, out) == 1
    os.utime(src / "b.png")  # touched, same bytes: still done
    assert predict(checkpoint, src, out) == 0


def test_a_manifest_without_input_digests_is_not_trusted(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    predict(checkpoint, images, out)
    m = json.loads((out / "manifest.json").read_text())
    for case in m["part_cases"].values():
        del case["inputs"]
    (out / "manifest.json").write_text(json.dumps(m))
    assert predict(checkpoint, images, out) == len(NAMES)
