"""The command line's surface: help on every argument, --version, the layouts, presets, predict's positionals."""

from __future__ import annotations

import argparse
import re
from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg import __version__
from diffuseg.cli import (
    CASE_OPTIONS,
    LAYOUTS,
    PREDICT_OPTIONS,
    TRAIN_OPTIONS,
    build_parser,
    main,
    split_predict_positionals,
)
from diffuseg.config import Role, parse_overrides, role_of
from diffuseg.errors import UserError
from diffuseg.presets import load_config

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "sample.steps=1",
    "sample.samples=2",
    "sample.batch_size=2",
]


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_argument_of_every_subcommand_has_help():
    parser = build_parser()
    subs = _subparsers(parser)
    assert {"train", "predict", "evaluate", "report", "verify", "info", "demo", "presets"} <= set(subs)
    missing = [
        f"{name} {action.dest}"
        for name, sub in subs.items()
        for action in sub._actions
        if not (action.help or "").strip() or action.help == argparse.SUPPRESS
    ]
    assert not missing, f"arguments without help: {missing}"
    assert all((a.help or "").strip() for a in parser._actions)


def test_top_level_help_is_for_users_and_lists_the_workflow():
    text = build_parser().format_help()
    assert "call one library function" not in text
    steps = [text.index(f"diffuseg {step} ") for step in ("verify", "train", "predict", "evaluate", "report")]
    assert steps == sorted(steps)  # the epilog's examples, in workflow order


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"diffuseg {version('diffuseg')}"
    assert version("diffuseg") == __version__


def test_layout_choices_are_the_readers_registry(capsys):
    from diffuseg.data.formats import READERS
    from diffuseg.enums import Layout

    assert set(LAYOUTS) == {str(m) for m in Layout} == {"auto", *(str(k) for k in READERS)}
    with pytest.raises(SystemExit) as exit_info:
        main(["verify", "somewhere", "--layout", "nnUnet-v2"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'nnUnet-v2'" in err and "'paired'" in err


def test_presets_lists_each_with_a_description(capsys):
    from diffuseg.presets import preset_files

    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ")}
    assert set(lines) == set(preset_files()) and len(lines) > 50
    for name, line in lines.items():
        description = line[len(f"  {name}") :].strip()
        assert len(description) > 10 and "(no description)" not in description, line
    assert "MedSegDiff-B on DDTI thyroid-nodule ultrasound" in lines["medsegdiff-b-ddti"]
    assert "Table 3 ablation: prediction eps, weighting snr," in lines["lidc-crop-eps-snr"]
    assert "MedSegDiff (Wu et al., MIDL 2023)" in out  # grouped under family titles


def test_predict_positionals_split():
    assert split_predict_positionals(["a.png", "b.png", "out", "sample.steps=3"]) == (
        ["a.png", "b.png"],
        "out",
        ["sample.steps=3"],
    )
    assert split_predict_positionals(["scans/", "sample.steps=3", "preds/"]) == (
        ["scans/"],
        "preds/",
        ["sample.steps=3"],
    )
    with pytest.raises(UserError, match=r"at least one input .* then the output folder"):
        split_predict_positionals(["a.png", "sample.steps=3"])


def test_override_error_examples_are_valid_for_their_subcommand():
    from diffuseg.inference.predict import apply_overrides

    train_example = re.search(r"e\.g\. (\S+)", _message(lambda: load_config("demo", ["steps"]))).group(1)
    load_config("demo", [train_example])  # train accepts its own example
    config = load_config("lidc-central", TINY)
    predict_example = re.search(r"e\.g\. (\S+)", _message(lambda: apply_overrides(config, ["steps"]))).group(1)
    assert predict_example.startswith("sample.")
    apply_overrides(config, [predict_example])  # predict accepts its own example
    assert parse_overrides([predict_example]) == {"sample": {"steps": 10}}


def _message(call) -> str:
    with pytest.raises(UserError) as err:
        call()
    return str(err.value)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained tiny diffusion UNet in the training package's checkpoint format."""
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.training.module import DiffusionModule

    config = load_config("lidc-central", TINY)
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path


@pytest.mark.usefixtures("one_thread")
def test_predict_several_input_files(checkpoint: Path, tmp_path: Path, capsys) -> None:
    rng = np.random.default_rng(0)
    files = []
    for name in ("a", "b"):
        files.append(tmp_path / f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (16, 20), dtype=np.uint8)).save(files[-1])
    out = tmp_path / "out"
    assert main(["predict", str(checkpoint), *map(str, files), str(out), "sample.samples=1", "--steps", "1"]) == 0
    assert "wrote 2 case(s)" in capsys.readouterr().out
    assert (out / "a.png").is_file() and (out / "b.png").is_file()
    assert main(["predict", str(checkpoint), str(files[0]), "sample.steps=1"]) == 2  # no output folder
    assert "then the output folder" in capsys.readouterr().err


def test_the_options_of_train_and_predict_set_run_control_fields():
    subs = _subparsers(build_parser())
    for name, table in (("train", TRAIN_OPTIONS), ("predict", PREDICT_OPTIONS)):
        assert set(table) <= {action.dest for action in subs[name]._actions}
        assert all(role_of(key) is Role.RUN for key in table.values())


def test_fold_sets_the_cases_field_data_fold(monkeypatch, capsys):
    subs = _subparsers(build_parser())
    assert set(CASE_OPTIONS) <= {action.dest for action in subs["train"]._actions}
    assert "fold" in {action.dest for action in subs["verify"]._actions}
    assert all(role_of(key) is Role.CASES for key in CASE_OPTIONS.values())
    seen = {}
    monkeypatch.setattr("diffuseg.training.run.train", lambda config, resume: seen.setdefault("config", config))
    assert main(["train", "demo", "--fold", "3", "train.steps=1"]) == 0
    assert seen["config"].data.fold == 3
    with pytest.raises(SystemExit):
        main(["train", "demo", "--fold", "-1"])
    assert "expected a fold number" in capsys.readouterr().err
