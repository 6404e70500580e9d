"""Hostile datasets through the command line (the corpus of ``hostile.py``): every subcommand that reads the bad
file refuses with exit code 2 and exactly one ``error:`` line, names the file and the problem, prints no
traceback and writes nothing (predict's OUTPUT and train's run folder are never made)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import pytest

from diffuseg.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile import DATASETS

TINY_UNET = "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A binary diffusion checkpoint of a tiny UNet at 16 px (untrained: these runs stop before sampling)."""
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.presets import load_config
    from diffuseg.training.module import DiffusionModule

    config = load_config("lidc-central", ["data.image_size=16", TINY_UNET, "sample.steps=1", "sample.samples=1"])
    path = tmp_path_factory.mktemp("ckpt") / "last.ckpt"
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, path)
    return path


class Unblocker:
    """Opens every FIFO under ``root`` for writing, now and then, and closes it at once: a reader blocked on one
    (the hang a refusal must prevent) then reads an empty file and the test fails instead of hanging."""

    def __init__(self, root: Path):
        self.root, self.stop = root, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            for folder, _, names in os.walk(self.root):
                for name in names:
                    path = os.path.join(folder, name)
                    try:
                        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                    except OSError:  # no reader waiting, or not a FIFO
                        continue

    def __enter__(self) -> Unblocker:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()


def command(name: str, root: Path, out: Path, checkpoint: Path) -> list[str]:
    if name == "verify":
        return ["verify", str(root)]
    if name == "train":
        return ["train", "demo", "--data", str(root), "--out", str(out), "data.image_size=16", TINY_UNET]
    return ["predict", str(checkpoint), str(root), str(out)]


def refused(err: str, named: str, problem: str) -> None:
    """Exactly one ``error:`` line, the file named (in that line or the problem list below it), the problem
    said, no traceback."""
    lines = err.strip().splitlines()
    assert sum(line.startswith("error:") for line in lines) == 1 and lines[0].startswith("error:"), err
    assert "Traceback" not in err and named in err and problem in err, err
    problem_lines = [line for line in lines if named in line and problem in line]
    assert problem_lines, err  # the file and its problem on one line


CASES = [(name, cmd) for name, (_, _, commands) in DATASETS.items() for cmd in commands]


@pytest.mark.parametrize(("name", "cmd"), CASES, ids=[f"{c}: {n}" for n, c in CASES])
def test_a_hostile_dataset_is_refused_by_name(name, cmd, checkpoint, tmp_path, capsys):
    build, problem, _ = DATASETS[name]
    root, out = tmp_path / "data", tmp_path / "out"
    root.mkdir()
    named = build(root)
    before = sorted(p.name for p in tmp_path.iterdir())
    with Unblocker(tmp_path):
        code = main(
            [*command(cmd, root, out, checkpoint), "--threads", "1"]
            if cmd == "train"
            else command(cmd, root, out, checkpoint)
        )
    assert code == 2
    refused(capsys.readouterr().err, str(named), problem)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == before
