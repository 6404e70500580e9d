"""A disk that fills up while predict or train writes: one ``error:`` line naming the file, exit code 2, no
traceback, no temporary or half-written file left, and the same command resumes to the result of a clean run.
The full disk is simulated at the k-th write (the encoder or ``torch.save`` writes a few bytes, then fails with
``ENOSPC``), so the test needs no file system of its own."""

from __future__ import annotations

import errno
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile import TINY_UNET, disc, grey, png, refused

pytestmark = pytest.mark.usefixtures("one_thread")


def _full_at(k: int, real, write_some):
    """``real`` that, at its ``k``-th call, writes a few bytes (``write_some(args)``) and fails as a full disk."""
    calls = {"n": 0}

    def call(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == k:
            write_some(args)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    return call


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if ".~" in p.name]


def test_predict_on_a_full_disk_stops_with_one_line_and_resumes(untrained_checkpoint, tmp_path, capsys, monkeypatch):
    from diffuseg.inference import writers

    src = tmp_path / "in"
    for name in ("a", "b", "c"):
        png(src / f"{name}.png", grey(ord(name)))
    clean, out = tmp_path / "clean", tmp_path / "out"
    assert main(["predict", str(untrained_checkpoint), str(src), str(clean)]) == 0
    capsys.readouterr()
    partial = lambda args: Path(args[0]).write_bytes(b"\x89PNG\r\n\x1a\n half")  # noqa: E731
    monkeypatch.setattr(writers, "_encode", _full_at(3, writers._encode, partial))  # b's mask: a's two files done
    assert main(["predict", str(untrained_checkpoint), str(src), str(out)]) == 2
    err = capsys.readouterr().err
    refused(err, str(out / "b.png"), "no space left on device writing")
    assert "nothing was half-written: the files written so far are complete, rerun to resume" in err
    assert not _temporaries(out) and not (out / "b.png").exists()
    assert np.array_equal(np.asarray(Image.open(out / "a.png")), np.asarray(Image.open(clean / "a.png")))
    monkeypatch.undo()
    assert main(["predict", str(untrained_checkpoint), str(src), str(out)]) == 0
    assert "resuming: 1 of 3 case(s) already done" in capsys.readouterr().err
    for name in ("a", "b", "c"):
        for suffix in ("", "_uncertainty"):
            mine, theirs = (Image.open(f / f"{name}{suffix}.png") for f in (out, clean))
            assert np.array_equal(np.asarray(mine), np.asarray(theirs)), name


def test_train_on_a_full_disk_keeps_the_last_checkpoint_and_resumes(tmp_path, capsys, monkeypatch):
    from diffuseg.checkpoint import read_checkpoint

    data, run = tmp_path / "data", tmp_path / "run"
    for i in range(4):
        png(data / "images" / f"{i}_a.png", grey(i))
        png(data / "masks" / f"{i}_a.png", disc(3 + i))
    args = ["train", "demo", "--data", str(data), "--out", str(run), "data.image_size=16", TINY_UNET]
    args += ["train.batch_size=2", "train.ckpt_every=1", "train.log_every=1", "--steps", "3", "--threads", "1"]
    partial = lambda args: args[1].write(b"PK\x03\x04 half")  # noqa: E731
    monkeypatch.setattr(torch, "save", _full_at(2, torch.save, partial))  # the checkpoint of step 2
    assert main(args) == 2
    last = run / "checkpoints" / "last.ckpt"
    refused(capsys.readouterr().err, str(last), "no space left on device writing")
    assert not _temporaries(run) and read_checkpoint(last)["diffuseg"]["global_step"] == 1
    monkeypatch.undo()
    assert main([*args, "--resume"]) == 0
    assert read_checkpoint(last)["diffuseg"]["global_step"] == 3


@pytest.mark.parametrize(("code", "filename"), [(errno.ENOSPC, "/runs/x/logs/metrics.csv"), (errno.EDQUOT, None)])
def test_the_command_line_says_a_full_disk_in_one_line(code, filename, tmp_path, capsys, monkeypatch):
    import diffuseg.data.verify

    def full(*args, **kwargs):
        raise OSError(code, "No space left on device", filename)

    monkeypatch.setattr(diffuseg.data.verify, "verify_dataset", full)
    assert main(["verify", str(tmp_path)]) == 2
    refused(capsys.readouterr().err, filename or "the output", "no space left on device writing")
