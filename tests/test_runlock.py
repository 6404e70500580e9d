"""The folder lock: exclusive, released on exit, a dead owner's lock taken over, a live one refused."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from diffuseg.errors import UserError
from diffuseg.runlock import LOCK_NAME, folder_lock, holder_of


def test_exclusive_and_released(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    with folder_lock(folder, "train") as path:
        assert path == folder / LOCK_NAME and holder_of(path)["what"] == "train"
        with pytest.raises(UserError, match=r"another x is writing here: train \(pid"), folder_lock(folder, "x"):
            pass
        with folder_lock(folder, "other", name=".other.lock"):  # another name is another lock
            pass
    assert not path.exists()
    with folder_lock(folder, "predict"):
        pass


def test_released_when_the_block_raises(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), folder_lock(tmp_path, "train"):
        raise RuntimeError
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    record = {"pid": int(dead.stdout), "host": socket.gethostname(), "what": "predict"}
    (tmp_path / LOCK_NAME).write_text(json.dumps(record))
    assert holder_of(tmp_path / LOCK_NAME) is None
    with folder_lock(tmp_path, "train") as path:
        assert holder_of(path)["what"] == "train"


def test_lock_of_another_host_is_kept(tmp_path: Path) -> None:
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere.invalid", "what": "train"}))
    with (
        pytest.raises(UserError, match=r"pid 1 on elsewhere\.invalid.*delete .*\.diffuseg\.lock"),
        folder_lock(tmp_path, "predict"),
    ):
        pass
    assert (tmp_path / LOCK_NAME).exists()
