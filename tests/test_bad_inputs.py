"""Bad input at the command line: one `error:` line naming the file or key, exit code 2, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from diffuseg.cli import main
from diffuseg.data.synthetic import SyntheticSpec, write_synthetic

TINY_UNET = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_synthetic(tmp_path_factory.mktemp("syn"), 6, SyntheticSpec(size=16), seed=0, layout="lidc")


def test_overrides_after_options_reach_the_config(tmp_path, capsys):
    # argparse alone rejects `train PRESET --out D key=value` ("unrecognized arguments")
    code = main(["train", "demo", "--out", str(tmp_path / "run"), "train.steps=-3"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "train.steps" in err


def test_unknown_option_still_refused():
    with pytest.raises(SystemExit) as exit_info:
        main(["presets", "--nope"])
    assert exit_info.value.code == 2


def test_image_size_not_divisible_by_downsampling(synthetic, tmp_path, capsys):
    run = tmp_path / "run"
    code = main(["train", "medsegdiff-b-ddti", "--data", str(synthetic), "--out", str(run), "data.image_size=16"])
    assert code == 2
    err = capsys.readouterr().err
    assert "data.image_size=16" in err and "multiple of 32" in err and "Traceback" not in err
    assert not (run / "checkpoints").exists()


def test_unknown_padding_is_refused(tmp_path, capsys):
    assert main(["train", "demo", "--out", str(tmp_path / "run"), "model.options.padding=circular"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "'circular' is not one of: zeros, partial" in err


@pytest.mark.slow
def test_training_output_without_lightning_noise(synthetic, tmp_path, capfd):
    run = tmp_path / "run"
    args = ["train", "lidc-central", "--data", str(synthetic), "--out", str(run), "data.image_size=16", TINY_UNET]
    args += ["train.steps=1", "train.val_every=0", "train.batch_size=2", "train.log_every=1"]
    assert main(args) == 0
    out, err = capfd.readouterr()
    text = out + err
    assert "litlogger" not in text and "Modules in train mode" not in text and "LeafSpec" not in text
    assert "TPU available" not in text and "GPU available: False" not in text  # no banner of absent devices
    assert "model diffusion-unet:" in out and "M parameters" in out


@pytest.mark.parametrize(
    ("override", "message"), [("model.name=resnet-9000", "model 'resnet-9000' is not one of"),
                              ("train.precision=fp8", "train.precision 'fp8' is not one of")]
)  # fmt: skip
def test_bad_model_or_precision_fails_before_the_data_is_read(override, message, tmp_path, capsys):
    missing = tmp_path / "no-such-dataset"  # were the data read first, the error would be about this folder
    assert main(["train", "demo", "--data", str(missing), "--out", str(tmp_path / "run"), override]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and message in err and "no-such-dataset" not in err


def _file_in_the_way(tmp_path: Path) -> Path:
    """A path whose parent is a plain file, so no folder can be made there (works as root too)."""
    blocker = tmp_path / "blocker"
    blocker.write_text("not a folder")
    return blocker / "out"


def test_unwritable_run_folder(synthetic, tmp_path, capsys):
    out = _file_in_the_way(tmp_path)
    assert main(["train", "demo", "--data", str(synthetic), "--out", str(out), "train.steps=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and str(out) in err and "cannot create the run folder" in err


def test_atomic_write_into_unwritable_folder_is_a_user_error(tmp_path):
    from diffuseg.errors import UserError
    from diffuseg.files import write_text_atomic

    target = _file_in_the_way(tmp_path) / "results.json"
    with pytest.raises(UserError, match="cannot write here"):
        write_text_atomic(target, "{}")


def test_report_into_unwritable_folder(tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text('{"summary": {}, "cases": []}')
    out = _file_in_the_way(tmp_path) / "index.html"
    code = main(["report", str(results), "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot create the report folder" in err, err


def test_image_that_is_not_2d(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    for stem in ("1_a", "2_a"):
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "masks" / f"{stem}.png")
    np.save(tmp_path / "images" / "1_a.npy", np.zeros((4, 16, 16, 2), np.float32))
    np.save(tmp_path / "images" / "2_a.npy", np.zeros((16,), np.float32))
    assert main(["verify", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "1_a.npy: not a 2D image" in err and "2_a.npy: not a 2D image" in err and "Traceback" not in err


def test_many_channels_are_not_averaged_into_one():
    from diffuseg.data.transforms import match_channels

    assert match_channels(torch.ones(3, 4, 4), 1, "rgb").shape == (1, 4, 4)
    with pytest.raises(ValueError, match=r"images have 4 channels but data\.in_channels is 1"):
        match_channels(torch.ones(4, 4, 4), 1, "brats")


def test_lightning_device_misconfiguration(synthetic, tmp_path, capsys):
    args = ["train", "lidc-central", "--data", str(synthetic), "--out", str(tmp_path / "run"), "data.image_size=16"]
    assert main([*args, TINY_UNET, "train.steps=1", "train.devices=0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "train.devices=0" in err and "Traceback" not in err


def test_text_file_as_checkpoint(tmp_path, capsys):
    fake = tmp_path / "model.ckpt"
    fake.write_text("garbage\n")
    assert main(["predict", str(fake), str(tmp_path), str(tmp_path.parent / "out-text-ckpt")]) == 2
    err = capsys.readouterr().err
    assert "not a readable PyTorch checkpoint" in err and "pickled" not in err


def test_evaluate_lists_every_bad_prediction_at_once(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt / "images", gt / "masks", pred):
        folder.mkdir(parents=True)
    disc = np.zeros((16, 16), np.uint8)
    disc[4:10, 4:10] = 255
    for name in ("1_a", "2_a", "3_a"):
        Image.fromarray(disc).save(gt / "images" / f"{name}.png")
        Image.fromarray(disc).save(gt / "masks" / f"{name}.png")
    Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).save(pred / "1_a.png")  # a soft map
    Image.fromarray(disc).save(pred / "2_a.png")  # fine
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(pred / "3_a.png")  # another size
    assert main(["evaluate", str(pred), str(gt)]) == 2
    err = capsys.readouterr().err
    assert "2 problem(s)" in err and "1_a.png: predicted mask is not binary" in err
    assert "3_a.png: size 8x8 differs" in err and "2_a.png" not in err and "Traceback" not in err
    assert not (pred / "results.json").exists()


def test_evaluate_refuses_a_non_binary_prediction(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    gt = tmp_path / "gt"
    (gt / "images").mkdir(parents=True)
    (gt / "masks").mkdir()
    disc = np.zeros((16, 16), np.uint8)
    disc[4:10, 4:10] = 255
    Image.fromarray(disc).save(gt / "images" / "1_a.png")
    Image.fromarray(disc).save(gt / "masks" / "1_a.png")
    pred = tmp_path / "pred"
    pred.mkdir()
    Image.fromarray((np.arange(256).reshape(16, 16)).astype(np.uint8)).save(pred / "1_a.png")  # a soft map
    assert main(["evaluate", str(pred), str(gt)]) == 2
    err = capsys.readouterr().err
    assert "1_a.png: predicted mask is not binary" in err
    assert not (pred / "results.json").exists()
    Image.fromarray(disc).save(pred / "1_a.png")
    assert main(["evaluate", str(pred), str(gt)]) == 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["info", "unet", "--image-size", "0"], "expected a positive integer, got 0"),
        (["info", "unet", "--in-channels", "x"], "expected a positive integer, got 'x'"),
        (["verify", "somewhere", "--foreground", "a,b"], "expected label values like 1,4"),
    ],
)
def test_bad_option_values(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_unknown_top_level_override_names_its_origin(capsys):
    assert main(["train", "demo", "nokey.x=1"]) == 2
    err = capsys.readouterr().err
    assert "demo.yaml with overrides: top level: unknown key(s) nokey" in err


def test_broken_yaml_names_line_and_column(tmp_path, capsys):
    config = tmp_path / "broken.yaml"
    config.write_text("a: 1\n b: 2\n")
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert "broken.yaml: not valid YAML (line 2, column 3: mapping values are not allowed here)" in err
    assert len(err.strip().splitlines()) == 1


def test_nnunet_layout_without_dataset_json(tmp_path, capsys):
    (tmp_path / "imagesTr").mkdir()
    assert main(["verify", str(tmp_path), "--layout", "nnunet"]) == 2
    err = capsys.readouterr().err
    assert "dataset.json: not found" in err and "Errno" not in err


def test_no_validation_patients_when_validation_is_asked_for(tmp_path, capsys):
    import shutil

    data = write_synthetic(tmp_path / "syn", 4, SyntheticSpec(size=16), seed=0, layout="lidc")
    slices = data
    patients = sorted(p.name for p in slices.iterdir() if p.is_dir())
    (data / "train_patients.txt").write_text("\n".join(patients[:-1]) + "\n")
    (data / "val_patients.txt").write_text(patients[-1] + "\n")
    shutil.rmtree(slices / patients[-1])  # the only validation patient is gone
    args = ["train", "lidc-central", "--data", str(data), "--out", str(tmp_path / "run"), "data.image_size=16"]
    assert main([*args, TINY_UNET, "train.steps=1", "train.val_every=1"]) == 2
    err = capsys.readouterr().err
    lists = (data / "val_patients.txt").resolve()
    assert f"no validation patients (none of the patients in {lists} is in the data)" in err
    assert "train.val_every=0" in err


def test_demo_output_inside_its_dataset(synthetic, capsys):
    assert main(["demo", "--data", str(synthetic), "--out", str(synthetic / "demo-out"), "--steps", "1"]) == 2
    assert "must not be inside the dataset folder" in capsys.readouterr().err
    assert not (synthetic / "demo-out").exists()


def test_a_named_layout_that_does_not_match_the_data(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from diffuseg.presets import load_config

    assert load_config("probunet-aa").data.layout == "auto"  # presets let the data folder decide
    for folder in ("images", "masks"):
        (tmp_path / folder).mkdir()
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / folder / "1_a.png")
    args = ["train", "probunet-aa", "--data", str(tmp_path), "--out", str(tmp_path.parent / "run-layout")]
    assert main([*args, "data.layout=lidc"]) == 2
    err = capsys.readouterr().err
    assert "no cases found in the lidc layout" in err and "data.layout=auto" in err


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("data: 5\n", "data: expected a mapping, got 5"),  # --data used to replace it with defaults
        ("model: {options: 3}\n", "model.options: expected a mapping, got 3"),
        ("train: {lr: .inf}\n", "train.lr: an infinite value is not allowed"),
    ],
)
def test_malformed_preset_sections(yaml_text, message, tmp_path, capsys):
    config = tmp_path / "preset.yaml"
    config.write_text(yaml_text)
    args = ["train", str(config), "--data", str(tmp_path), "--out", str(tmp_path / "run"), "model.options.x=1"]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.presets import load_config
    from diffuseg.training.module import DiffusionModule

    config = load_config("lidc-central", ["data.image_size=16", TINY_UNET, "sample.steps=2", "sample.samples=2"])
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path


def _pngs(folder: Path, *names: str) -> Path:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True)
    for name in names:
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / name)
    return folder


def _one_error(capsys, *parts: str) -> None:
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and err.count("\n") == 1, err
    for part in parts:
        assert part in err, err


def test_predict_refuses_clashing_output_names(tiny_checkpoint, tmp_path, capsys):
    src = _pngs(tmp_path / "in", "x.png", "x_uncertainty.png")
    assert main(["predict", str(tiny_checkpoint), str(src), str(tmp_path / "out")]) == 2
    _one_error(capsys, "x_uncertainty.png and", "x.png")
    assert not (tmp_path / "out").exists()


def test_predict_refuses_another_run_in_its_folder(tiny_checkpoint, tmp_path, capsys):
    src, out = _pngs(tmp_path / "in", "a.png"), tmp_path / "out"
    assert main(["predict", str(tiny_checkpoint), str(src), str(out)]) == 0
    capsys.readouterr()
    assert main(["predict", str(tiny_checkpoint), str(src), str(out), "--seed", "4"]) == 2
    _one_error(capsys, "another prediction run", "sample.seed (0 there, 4 now)", "--overwrite")
    assert main(["predict", str(tiny_checkpoint), str(src), str(out), "--num-parts", "2", "--part-id", "2"]) == 2
    _one_error(capsys, "part-id")


def test_evaluate_refuses_an_incomplete_prediction(tiny_checkpoint, tmp_path, capsys):
    src, out = _pngs(tmp_path / "in", "a.png", "b.png"), tmp_path / "out"
    assert main(["predict", str(tiny_checkpoint), str(src), str(out), "--num-parts", "2", "--part-id", "0"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(out), str(src)]) == 2
    _one_error(capsys, "incomplete (1 of 2 cases done")


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_predict_refuses_a_checkpoint_with_non_finite_weights(tiny_checkpoint, value, tmp_path, capsys):
    from diffuseg.checkpoint import read_checkpoint, save_atomic

    ckpt = read_checkpoint(tiny_checkpoint)
    name = next(k for k, v in ckpt["state_dict"].items() if k.startswith("ema.") and v.is_floating_point())
    ckpt["state_dict"][name] = ckpt["state_dict"][name].clone()
    ckpt["state_dict"][name].view(-1)[0] = value  # the checksums of the file written are valid
    bad = tmp_path / "diverged.ckpt"
    save_atomic(ckpt, bad)
    src, out = _pngs(tmp_path / "in", "a.png"), tmp_path / "out"
    assert main(["predict", str(bad), str(src), str(out)]) == 2
    _one_error(capsys, str(bad), f"weight {name} holds 1 NaN or infinite value(s)")
    assert not out.exists()


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--num-parts", "2"], "--num-parts 2 without --part-id: name the part this job predicts, --part-id 0 .. 1"),
        (["--part-id", "1"], "--part-id 1 without --num-parts"),
        (["--part-id", "0"], "--part-id 0 without --num-parts"),
    ],
)
def test_predict_needs_num_parts_and_part_id_together(tiny_checkpoint, options, message, tmp_path, capsys):
    src, out = _pngs(tmp_path / "in", "a.png", "b.png"), tmp_path / "out"
    assert main(["predict", str(tiny_checkpoint), str(src), str(out), *options]) == 2
    _one_error(capsys, message)
    assert not out.exists()


def _run_with_split(tmp_path: Path, val: list[str]) -> Path:
    from diffuseg.data.splits import write_split

    run = tmp_path / "run"
    write_split(run, {"train": {"patients": ["t"], "cases": ["t"]}, "val": {"patients": val, "cases": val}})
    return run


def test_predict_split_names_the_split_cases_missing_from_the_input(tiny_checkpoint, tmp_path, capsys):
    src, out = _pngs(tmp_path / "in", "a.png", "b.png"), tmp_path / "out"
    missing = [f"gone{i}" for i in range(7)]
    run = _run_with_split(tmp_path, ["a", "b", *missing])
    assert main(["predict", str(tiny_checkpoint), str(src), str(out), "--split", "val", "--run", str(run)]) == 2
    _one_error(capsys, str(src), "7 of the 9 case(s) of the split are not in it", "gone0, gone1", "and 2 more")
    assert not out.exists()


def test_evaluate_split_names_the_split_cases_missing_from_the_ground_truth(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt / "images", gt / "masks", pred):
        folder.mkdir(parents=True)
    for name in ("a", "b"):
        for folder in (gt / "images", gt / "masks", pred):
            Image.fromarray(np.zeros((8, 8), np.uint8)).save(folder / f"{name}.png")
    run = _run_with_split(tmp_path, ["a", "b", "c"])
    assert main(["evaluate", str(pred), str(gt), "--split", "val", "--run", str(run)]) == 2
    _one_error(capsys, str(gt), "1 of the 3 case(s) of the split are not in it (c)")
    assert not (pred / "results.json").exists()


def _label_maps(tmp_path: Path, classes: str) -> tuple[Path, Path]:
    """A paired ground truth and a prediction folder of 3-class label maps, whose config.yaml declares ``classes``."""
    import numpy as np
    import yaml
    from PIL import Image

    gt, pred = tmp_path / "gt", tmp_path / "pred"
    for folder in (gt / "images", gt / "masks", pred):
        folder.mkdir(parents=True)
    labels = np.repeat(np.arange(4, dtype=np.uint8), 4)[None].repeat(16, 0)  # 0 | 1 | 2 | 3 in stripes
    Image.fromarray(labels * 60).save(gt / "images" / "a.png")
    Image.fromarray(labels).save(gt / "masks" / "a.png")
    Image.fromarray(labels).save(pred / "a.png")
    specs = [{"name": n, "values": [int(v)]} for n, v in (item.split("=") for item in classes.split(","))]
    (pred / "config.yaml").write_text(yaml.safe_dump({"data": {"classes": specs}}))
    return pred, gt


def test_evaluate_refuses_classes_that_contradict_the_predictions(tmp_path, capsys):
    pred, gt = _label_maps(tmp_path, "RV=1,Myo=2,LV=3")
    assert main(["evaluate", str(pred), str(gt), "--classes", "LV=1,Myo=2,RV=3"]) == 2
    _one_error(capsys, "--classes LV=1,Myo=2,RV=3 contradicts", f"{pred / 'config.yaml'}: RV=1,Myo=2,LV=3")
    assert not (pred / "results.json").exists()
    assert main(["evaluate", str(pred), str(gt), "--classes", "RV=1,Myo=2,LV=3"]) == 0  # the same classes: fine
    assert main(["evaluate", str(pred), str(gt)]) == 0


def test_evaluate_refuses_classes_for_binary_predictions(tmp_path, capsys):
    import yaml

    pred, gt = _label_maps(tmp_path, "RV=1,Myo=2,LV=3")
    (pred / "config.yaml").write_text(yaml.safe_dump({"data": {"classes": [], "foreground": [1]}}))
    assert main(["evaluate", str(pred), str(gt), "--classes", "RV=1,Myo=2,LV=3"]) == 2
    _one_error(capsys, "contradicts", "binary (foreground 1)")


def _png_bytes(width: int, height: int, pixels: bytes = b"") -> bytes:
    """A PNG whose header says ``width`` x ``height`` (8-bit grey), with ``pixels`` deflated as its data."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(pixels)) + chunk(b"IEND", b"")


def _cut(path: Path, keep: float = 0.6) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _bad_png_truncated(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    path = folder / "z.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
    _cut(path)
    return path


def _bad_png_zero_width(folder: Path) -> Path:
    (folder / "z.png").write_bytes(_png_bytes(0, 16))
    return folder / "z.png"


def _bad_png_bomb(folder: Path) -> Path:
    (folder / "z.png").write_bytes(_png_bytes(20000, 20000))  # 400 M pixels declared: Pillow's bomb limit
    return folder / "z.png"


def _bad_jpeg_truncated(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    path = folder / "z.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
    _cut(path)
    return path


def _bad_gif_truncated(folder: Path) -> Path:
    import numpy as np
    from PIL import Image

    path = folder / "z.gif"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32), dtype=np.uint8)).save(path)
    _cut(path)
    return path


def _bad_npy_truncated(folder: Path) -> Path:
    import numpy as np

    np.save(folder / "z.npy", np.ones((32, 32), np.float32))
    _cut(folder / "z.npy")
    return folder / "z.npy"


def _bad_npy_text(folder: Path) -> Path:
    import numpy as np

    np.save(folder / "z.npy", np.full((16, 16), "x"))
    return folder / "z.npy"


def _bad_nifti_truncated(folder: Path, name: str) -> Path:
    import nibabel as nib
    import numpy as np

    path = folder / name
    nib.save(nib.Nifti1Image(np.random.default_rng(0).random((16, 16, 2)).astype(np.float32), np.eye(4)), str(path))
    _cut(path, 0.8)
    return path


@pytest.mark.parametrize(
    ("build", "problem"),
    [
        (_bad_png_truncated, "Truncated File Read"),
        (_bad_png_zero_width, "unreadable or corrupt"),
        (_bad_png_bomb, "decompression bomb"),
        (_bad_jpeg_truncated, "unreadable or corrupt"),
        (_bad_gif_truncated, "unreadable or corrupt"),
        (_bad_npy_truncated, "unreadable or corrupt"),
        (_bad_npy_text, "holds <U1 values, not numbers"),
        (lambda f: _bad_nifti_truncated(f, "z.nii"), "truncated"),
        (lambda f: _bad_nifti_truncated(f, "z.nii.gz"), "unreadable or corrupt"),
    ],
    ids=["png-truncated", "png-0-wide", "png-bomb", "jpeg-truncated", "gif-truncated", "npy-truncated", "npy-text",
         "nii-truncated", "nii.gz-truncated"],
)  # fmt: skip
def test_predict_checks_every_input_before_writing(tiny_checkpoint, build, problem, tmp_path, capsys):
    src, out = _pngs(tmp_path / "in", "a.png", "b.png"), tmp_path / "out"  # good cases first, then the bad one
    bad = build(src)
    assert main(["predict", str(tiny_checkpoint), str(src), str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "Traceback" not in err and f"{bad}: " in err and problem in err, err
    assert not out.exists()
