"""One writer per run folder: a second `train` into a busy --out is refused; a killed run's temporaries go."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from diffuseg.errors import UserError
from diffuseg.files import temp_prefix
from diffuseg.runlock import folder_lock
from diffuseg.training.run import primary_process, train


def test_a_second_train_into_a_busy_run_folder_is_refused(tiny_config, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "mine.txt").write_text("kept")
    with folder_lock(run, "train"), pytest.raises(UserError, match=r"run.*train"):
        train(tiny_config(steps=1, ckpt_every=1))
    assert (run / "mine.txt").read_text() == "kept"
    assert not (run / "config.yaml").exists() and not (run / "checkpoints").exists()


def test_the_lock_is_released_and_a_dead_writers_temporaries_removed(tiny_config, tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    stale = checkpoints / (temp_prefix("last.ckpt").replace(f"~{os.getpid()}~", f"~{dead.pid}~") + "x.tmp")
    stale.write_bytes(b"half a checkpoint")
    run = train(tiny_config(steps=1, ckpt_every=1))
    assert not stale.exists() and (checkpoints / "last.ckpt").is_file()
    assert not (run / ".diffuseg.lock").exists()  # released: the next run may start
    with folder_lock(run, "train"):
        pass


@pytest.mark.parametrize(
    ("env", "primary"),
    [
        ({}, True),
        ({"LOCAL_RANK": "0", "RANK": "0"}, True),
        ({"LOCAL_RANK": "1"}, False),
        ({"NODE_RANK": "1", "LOCAL_RANK": "0"}, False),
        ({"SLURM_PROCID": "3"}, False),
    ],
)
def test_only_global_rank_zero_takes_the_lock(monkeypatch, env, primary):
    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert primary_process() is primary
