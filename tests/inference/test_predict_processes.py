"""``diffuseg predict`` as separate processes: a real ``kill -9`` then resume, and ``--devices 2`` on CPU
processes, each byte for byte equal to an uninterrupted single run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffuseg.presets import load_config

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "sample.steps=40",
    "sample.samples=3",
    "sample.batch_size=3",
]
CASES = 24
# one thread everywhere: results must not depend on how a CPU reduction was split between threads
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(checkpoint, input folder, the uninterrupted single run's output)."""
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.training.module import DiffusionModule

    root = tmp_path_factory.mktemp("procs")
    config = load_config("lidc-central", TINY)
    torch.manual_seed(0)
    ckpt = root / "last.ckpt"
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, ckpt)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(CASES):
        Image.fromarray(rng.integers(0, 255, (18, 20), dtype=np.uint8)).save(images / f"case{i:02d}.png")
    reference = root / "reference"
    subprocess.run(_cmd(ckpt, images, reference), check=True, capture_output=True, env=ENV)
    return ckpt, images, reference


def _cmd(ckpt: Path, images: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "diffuseg.cli", "predict", str(ckpt), str(images), str(out), "--save-samples", *extra]


def _predictions(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith("manifest")
    }


def _done(manifest: Path) -> int:
    try:
        return sum(c["done"] for c in json.loads(manifest.read_text())["part_cases"].values())
    except (OSError, ValueError):
        return 0


@pytest.mark.slow
def test_kill_9_then_rerun_finishes_byte_identical(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ckpt, images, reference = setup
    out = tmp_path / "killed"
    proc = subprocess.Popen(_cmd(ckpt, images, out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    try:
        deadline = time.monotonic() + 240
        while _done(out / "manifest.json") < 1 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, "predict ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    killed = json.loads((out / "manifest.json").read_text())
    assert not killed["complete"]
    assert (out / ".diffuseg-predict.lock").exists()  # left by the killed process, taken over below

    rerun = subprocess.run(_cmd(ckpt, images, out), check=True, capture_output=True, text=True, env=ENV)
    assert "resuming:" in rerun.stderr and "already done" in rerun.stderr
    assert json.loads((out / "manifest.json").read_text())["complete"]
    assert _predictions(out) == _predictions(reference)
    assert (out / "manifest.json").read_bytes() == (reference / "manifest.json").read_bytes()
    assert not list(out.rglob(".*"))  # no lock, no temporary file


@pytest.mark.slow
def test_devices_2_on_cpu_equals_the_single_run(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    ckpt, images, reference = setup
    out = tmp_path / "ranks"
    done = subprocess.run(_cmd(ckpt, images, out, "--devices", "2"), capture_output=True, text=True, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"wrote {CASES} case(s)" in done.stdout
    assert _predictions(out) == _predictions(reference)
    parts = [json.loads((out / f"manifest.part-{r}-of-2.json").read_text()) for r in range(2)]
    assert all(p["complete"] for p in parts)
    assert list(parts[1]["part_cases"]) == [f"case{i:02d}" for i in range(1, CASES, 2)]
    bad = subprocess.run(
        _cmd(ckpt, images, out, "--devices", "2", "--seed", "3"), capture_output=True, text=True, env=ENV
    )
    assert bad.returncode == 2 and "sample.seed (0 there, 3 now)" in bad.stderr and "Traceback" not in bad.stderr
