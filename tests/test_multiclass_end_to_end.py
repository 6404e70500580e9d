"""Several classes end to end through the CLI: train an ACDC preset on a tiny SSL4MIS-style HDF5 dataset, predict
the validation volume, read the label maps back; classes taken from the dataset; bad label maps; real ACDC."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from diffuseg.checkpoint import checkpoint_config, read_checkpoint
from diffuseg.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))
from datafixtures import SHARED, h5, label_map, ssl4mis

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = [
    "data.image_size=32",  # MedSegDiff-B downsamples 32x; the 16 px data is resized up and written back at 16
    "model.options={base_channels: 8, dynamic_conditioning: true, ff_parser: true}",  # 4: one image fails at 32
    "train.batch_size=2",
    "train.val_every=2",
    "train.val_cases=2",
    "train.log_every=1",
    "train.ckpt_every=2",
    "sample.steps=2",
]
UNET = ["data.image_size=16", "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1}"]
VOLUME = "patient003_frame01"  # the validation patient of ``ssl4mis``: a 3D volume (3, 16, 16)


@pytest.fixture(scope="module")
def acdc_like(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two training patients as 2D slices, one validation patient as a 3D volume; labels 0/1/2/3 in quadrants."""
    return ssl4mis(tmp_path_factory.mktemp("acdc"))


def _train(preset: str, data: Path, run: Path, *overrides: str) -> Path:
    # one thread, as the module's one_thread fixture means: the CLI's own policy would take two on an idle machine
    args = ["train", preset, *overrides, "--data", str(data), "--out", str(run), "--steps", "2", "--threads", "1"]
    assert main(args) == 0
    return run / "checkpoints" / "last.ckpt"


def _label(path: Path) -> np.ndarray:
    with h5py.File(path, "r") as f:
        return np.asarray(f["label"][()])


@pytest.mark.slow
def test_train_medsegdiff_acdc_then_predict_the_validation_volume(acdc_like, tmp_path, capsys):
    ckpt = _train("medsegdiff-b-acdc", acdc_like, tmp_path / "run", *TINY)
    config = checkpoint_config(read_checkpoint(ckpt))
    assert [c.name for c in config.data.classes] == ["RV", "Myo", "LV"]
    metrics = next((tmp_path / "run" / "logs").glob("version_*/metrics.csv")).read_text()
    assert "val/dice" in metrics  # sampled validation scored the label maps

    out = tmp_path / "pred"
    args = ["predict", str(ckpt), str(acdc_like), str(out), "--split", "val", "--samples", "3", "--save-samples"]
    assert main([*args, "sample.uncertainty=variance"]) == 0
    with h5py.File(acdc_like / "data" / f"{VOLUME}.h5", "r") as f:
        shape = f["label"].shape
    label = _label(out / f"{VOLUME}.h5")
    assert label.shape == shape == (3, 16, 16) and set(np.unique(label)) <= {0, 1, 2, 3}
    with h5py.File(out / f"{VOLUME}_uncertainty.h5", "r") as f:
        u = np.asarray(f["uncertainty"][()])
        per_class = [np.asarray(f[f"uncertainty_{name}"][()]) for name in ("RV", "Myo", "LV")]
    assert u.shape == shape and u.min() >= 0.0 and u.max() <= 1.0
    assert all(m.shape == shape and m.min() >= 0.0 and m.max() <= 0.25 for m in per_class)  # f (1 - f)
    samples = sorted((out / "samples").glob("*.h5"))
    assert len(samples) == 3 and all(set(np.unique(_label(s))) <= {0, 1, 2, 3} for s in samples)
    record = json.loads((out / "prediction.json").read_text())
    assert record["classes"] == [{"name": n, "values": [v]} for n, v in (("RV", 1), ("Myo", 2), ("LV", 3))]
    assert not list(out.glob("patient00[12]*"))  # --split val: the training slices are not predicted


@pytest.mark.slow
def test_classes_from_the_dataset_are_kept_in_the_checkpoint(tmp_path, capsys):
    """Without data.classes the SSL4MIS reader names each label value a class; the checkpoint records them, so
    predicting needs only the checkpoint and writes the dataset's values."""
    data = ssl4mis(tmp_path / "data")
    ckpt = _train("unet-acdc", data, tmp_path / "run", *UNET, "data.classes=[]", "train.val_every=0")
    assert "classes from the dataset: class_1=1, class_2=2, class_3=3" in capsys.readouterr().out
    config = checkpoint_config(read_checkpoint(ckpt))
    assert [(c.name, c.values) for c in config.data.classes] == [
        ("class_1", (1,)),
        ("class_2", (2,)),
        ("class_3", (3,)),
    ]
    assert "class_1" in (tmp_path / "run" / "config.yaml").read_text()
    volume = tmp_path / "one" / "data"
    volume.mkdir(parents=True)
    shutil.copy(data / "data" / f"{VOLUME}.h5", volume)
    assert main(["predict", str(ckpt), str(tmp_path / "one"), str(tmp_path / "pred")]) == 0
    label = _label(tmp_path / "pred" / f"{VOLUME}.h5")
    assert label.shape == (3, 16, 16) and set(np.unique(label)) <= {0, 1, 2, 3}
    # resuming with the preset as given (no classes) continues the run with the checkpoint's classes
    assert main(["train", "unet-acdc", *UNET, "data.classes=[]", "train.val_every=0", "--data", str(data),
                 "--out", str(tmp_path / "run"), "--steps", "3", "--resume"]) == 0  # fmt: skip


def _bad_dataset(root: Path, kind: str) -> Path:
    ssl4mis(root)
    bad = root / "data" / "patient002_frame01_slice_2.h5"
    label = label_map(16) * 2 if kind == "value" else label_map(8)  # values 0/2/4/6; or an 8x8 label map
    h5(bad, np.zeros((16, 16), np.float32), label)
    return bad


@pytest.mark.parametrize(
    ("kind", "message"), [("value", "label value(s) {4, 6} not declared"), ("size", "mask size 8x8 differs")]
)
def test_bad_label_maps_exit_2_naming_the_file(tmp_path, capsys, kind, message):
    bad = _bad_dataset(tmp_path / "d", kind)
    for argv in (
        ["verify", str(tmp_path / "d"), "--classes", "RV=1,Myo=2,LV=3"],
        ["train", "unet-acdc", *UNET, "--data", str(tmp_path / "d"), "--out", str(tmp_path / "r"), "--steps", "1"],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and bad.name in err and message in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_verify_classes_option(tmp_path, capsys):
    ssl4mis(tmp_path)
    assert main(["verify", str(tmp_path), "--classes", "RV=1,Myo=2,LV=3"]) == 0
    assert "RV [1]" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", str(tmp_path), "--classes", "RV:1"])
    assert exit_info.value.code == 2 and "expected classes like RV=1,Myo=2,LV=3" in capsys.readouterr().err


ACDC = SHARED / "acdc"


@pytest.mark.slow
@pytest.mark.skipif(not (ACDC / "data").is_dir(), reason=f"ACDC not found at {ACDC} (the shared data folder)")
def test_real_acdc_smoke(tmp_path):
    """A few steps of the UNet on 4 ACDC slices, then one validation volume predicted in its own shape and values."""
    ckpt = _train("unet-acdc", ACDC, tmp_path / "run", *UNET[1:], "data.image_size=32", "data.max_cases=4",
                  "train.batch_size=2", "train.val_every=0")  # fmt: skip
    name = (ACDC / "val.list").read_text().split()[0]
    one = tmp_path / "one" / "data"
    one.mkdir(parents=True)
    shutil.copy(ACDC / "data" / f"{name}.h5", one)
    assert main(["predict", str(ckpt), str(tmp_path / "one"), str(tmp_path / "pred")]) == 0
    with h5py.File(ACDC / "data" / f"{name}.h5", "r") as f:
        shape = f["label"].shape
    label = _label(tmp_path / "pred" / f"{name}.h5")
    assert label.shape == shape and set(np.unique(label)) <= {0, 1, 2, 3}
