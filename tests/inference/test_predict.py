"""``predict`` end to end on a tiny checkpoint: files, sizes, determinism, refusals, and the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from diffuseg.cli import main
from diffuseg.errors import UserError
from diffuseg.inference.predict import predict
from diffuseg.presets import load_config

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "sample.steps=2",
    "sample.samples=3",
    "sample.batch_size=3",
]
SIZES = {"a": (20, 24), "b": (16, 16), "c": (12, 30)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diffuseg checkpoint of an untrained tiny diffusion UNet, in the training package's format."""
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.training.module import DiffusionModule

    config = load_config("lidc-central", TINY)
    torch.manual_seed(0)
    module = DiffusionModule(config)
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    save_atomic({"state_dict": module.state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of unlabelled PNGs of different sizes (not the model's 16 x 16)."""
    root = tmp_path_factory.mktemp("input")
    rng = np.random.default_rng(0)
    for name, size in SIZES.items():
        Image.fromarray(rng.integers(0, 255, size, dtype=np.uint8)).save(root / f"{name}.png")
    return root


def _read(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_writes_masks_uncertainty_samples_and_config(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    out = tmp_path / "pred"
    before = {p: p.read_bytes() for p in images.iterdir()}
    n = predict(checkpoint, images, out, ["sample.fusion=vote", "sample.relative_area=0.1"], save_samples=True)
    assert n == 3
    for name, size in SIZES.items():
        mask = _read(out / f"{name}.png")
        assert mask.shape == size and set(np.unique(mask)) <= {0, 255}
        assert _read(out / f"{name}_uncertainty.png").shape == size
        assert len(list((out / "samples").glob(f"{name}_s*.png"))) == 3
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["sample"]["fusion"] == "vote" and saved["sample"]["relative_area"] == 0.1
    assert {p: p.read_bytes() for p in images.iterdir()} == before  # the input is untouched


def test_config_records_the_precision_that_ran(
    checkpoint: Path, images: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from diffuseg import runtime

    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    predict(checkpoint, images, tmp_path / "pred", ["sample.precision=auto"])
    assert yaml.safe_load((tmp_path / "pred" / "config.yaml").read_text())["sample"]["precision"] == "32"


def test_deterministic_and_independent_of_batch_size(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    runs = {}
    for tag, batch in (("one", 1), ("two", 2), ("all", 9)):
        out = tmp_path / tag
        predict(checkpoint, images, out, [f"sample.batch_size={batch}", "sample.fusion=staple"])
        runs[tag] = {name: _read(out / f"{name}.png") for name in SIZES}
    for name in SIZES:
        assert np.array_equal(runs["one"][name], runs["two"][name])
        assert np.array_equal(runs["one"][name], runs["all"][name])


def test_single_file_input(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    assert predict(checkpoint, [images / "a.png"], tmp_path / "single") == 1
    assert (tmp_path / "single" / "a.png").is_file()


def test_refusals(checkpoint: Path, images: Path, tmp_path: Path) -> None:
    with pytest.raises(UserError, match="inside the input"):
        predict(checkpoint, images, images / "pred")
    with pytest.raises(UserError, match="not found"):
        predict(tmp_path / "missing.ckpt", images, tmp_path / "x")
    foreign = tmp_path / "foreign.ckpt"
    torch.save({"weight": torch.zeros(2)}, foreign)
    with pytest.raises(UserError, match="not a diffuseg checkpoint"):
        predict(foreign, images, tmp_path / "y")
    with pytest.raises(UserError, match=r"sample\.\* overrides"):
        predict(checkpoint, images, tmp_path / "z", ["train.steps=3"])
    with pytest.raises(UserError, match="fusion"):
        predict(checkpoint, images, tmp_path / "z", ["sample.fusion=median"])
    with pytest.raises(UserError, match="input not found"):
        predict(checkpoint, tmp_path / "nothing", tmp_path / "z")


def test_labels_of_a_labelled_input_are_never_read(tmp_path: Path) -> None:
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.training.module import DiffusionModule

    classes = "data.classes=[{name: RV, values: [1]}, {name: Myo, values: [2]}, {name: LV, values: [3]}]"
    config = load_config("lidc-central", [*TINY, classes])
    torch.manual_seed(0)
    checkpoint = tmp_path / "classes.ckpt"
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, checkpoint)
    rng = np.random.default_rng(2)
    for name in ("a", "b"):  # a paired folder whose masks hold 255, a value none of the checkpoint's classes has
        for folder, array in (("images", rng.integers(0, 255, (12, 14))), ("masks", np.full((12, 14), 255))):
            (tmp_path / "data" / folder).mkdir(parents=True, exist_ok=True)
            Image.fromarray(array.astype(np.uint8)).save(tmp_path / "data" / folder / f"{name}.png")
    assert predict(checkpoint, tmp_path / "data", tmp_path / "pred") == 2
    assert set(np.unique(_read(tmp_path / "pred" / "a.png"))) <= {0, 1, 2, 3}  # the checkpoint's label values


def test_cli(checkpoint: Path, images: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    args = ["predict", str(checkpoint), str(images), str(out), "--samples", "2", "--fusion", "mean"]
    assert main([*args, "--sampler", "ddpm", "--save-samples"]) == 0
    assert "wrote 3 case(s)" in capsys.readouterr().out
    assert len(list((out / "samples").glob("*.png"))) == 6
    assert main(["predict", str(checkpoint), str(images), str(images / "inside")]) == 2
    assert "error:" in capsys.readouterr().err


def test_nifti_volume_comes_back_as_a_volume(checkpoint: Path, tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    src = tmp_path / "vol"
    src.mkdir()
    affine = np.diag([0.7, 0.8, 2.5, 1.0])
    affine[:3, 3] = [10.0, -5.0, 3.0]
    data = np.random.default_rng(1).normal(size=(12, 10, 3)).astype(np.float32)
    nib.save(nib.Nifti1Image(data, affine), src / "scan.nii.gz")
    out = tmp_path / "pred"
    assert predict(checkpoint, src, out, ["sample.samples=2"]) == 1  # one volume of three slices
    mask = nib.load(out / "scan.nii.gz")
    assert mask.shape == (12, 10, 3)
    np.testing.assert_allclose(mask.affine, affine, atol=1e-5)
    assert nib.load(out / "scan_uncertainty.nii.gz").shape == (12, 10, 3)
