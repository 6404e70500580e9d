"""Hostile datasets through the command line (the corpus of ``hostile.py``): every subcommand that reads the bad
file refuses with exit code 2 and exactly one ``error:`` line, names the file and the problem, prints no
traceback and writes nothing (predict's OUTPUT and train's run folder are never made)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from diffuseg.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent / "data"))  # datafixtures, which writes DICOM series
from hostile import PAIRED, TINY_UNET, Unblocker, refused
from hostile_layouts import DICOM, NNUNET, SHAPES, SSL4MIS

pytestmark = pytest.mark.usefixtures("one_thread")

DATASETS = {**PAIRED, **NNUNET, **SSL4MIS, **DICOM, **SHAPES}


def command(name: str, root: Path, out: Path, checkpoint: Path) -> list[str]:
    if name == "verify":
        return ["verify", str(root)]
    if name == "train":
        return ["train", "demo", "--data", str(root), "--out", str(out), "data.image_size=16", TINY_UNET]
    return ["predict", str(checkpoint), str(root), str(out)]


CASES = [(name, cmd) for name, (_, _, commands) in DATASETS.items() for cmd in commands]


@pytest.mark.parametrize(("name", "cmd"), CASES, ids=[f"{c}: {n}" for n, c in CASES])
def test_a_hostile_dataset_is_refused_by_name(name, cmd, untrained_checkpoint, tmp_path, capsys):
    build, problem, _ = DATASETS[name]
    root, out = tmp_path / "data", tmp_path / "out"
    root.mkdir()
    named = build(root)
    before = sorted(p.name for p in tmp_path.iterdir())
    argv = command(cmd, root, out, untrained_checkpoint)
    with Unblocker(tmp_path):
        code = main([*argv, "--threads", "1"] if cmd == "train" else argv)
    assert code == 2
    refused(capsys.readouterr().err, str(named), problem)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before
