"""Atomic writes: the umask's modes (not mkstemp's 0600), and removing the temporaries of killed writers."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time

import pytest
import torch

from diffuseg.atomicio import atomic_path, remove_stale_temps, temp_dir, write_text_atomic
from diffuseg.config import Config, save_config
from diffuseg.training.checkpoint import save_atomic


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
    previous = os.umask(request.param)
    try:
        yield request.param
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_files_get_the_umask_mode(tmp_path, umask):
    write_text_atomic(tmp_path / "a.txt", "x")
    save_config(Config(), tmp_path / "config.yaml")
    save_atomic({"w": torch.ones(1)}, tmp_path / "last.ckpt")
    with atomic_path(tmp_path / "mask.png", suffix=".tmp.png") as tmp:
        tmp.write_bytes(b"png")
    for name in ("a.txt", "config.yaml", "last.ckpt", "mask.png"):
        assert _mode(tmp_path / name) == 0o666 & ~umask, name


def test_temp_folders_get_the_umask_mode(tmp_path, umask):
    assert _mode(temp_dir(tmp_path / "cache")) == 0o777 & ~umask


def test_cache_folder_and_files_get_the_umask_mode(tmp_path, umask):
    from diffuseg.data.cache import load_cached
    from diffuseg.data.formats import open_dataset
    from diffuseg.data.synthetic import SyntheticSpec, write_synthetic

    data = write_synthetic(tmp_path / "data", 2, SyntheticSpec(size=16), seed=0, layout="lidc")
    reader = open_dataset(data)
    arrays = load_cached(reader, range(len(reader)), 16, reader.annotators, tmp_path / "cache")
    assert _mode(arrays.folder) == 0o777 & ~umask
    for f in arrays.folder.iterdir():
        assert _mode(f) == 0o666 & ~umask, f.name


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid  # reaped: no process has this pid now (a reuse in the next milliseconds only keeps a temp)


def test_stale_temps_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    dead = _dead_pid()
    stale_file = tmp_path / f".last.ckpt.{dead}-abcd1234.tmp"
    stale_png = tmp_path / f".case1.png.{dead}-abcd1234.tmp.png"
    stale_dir = tmp_path / f".0123abcd.{dead}-abcd1234.tmp"
    live = tmp_path / f".last.ckpt.{os.getpid()}-efgh5678.tmp"
    old_name = tmp_path / ".config.yaml.k2j4h5g6.tmp"  # pid-less name of older versions, fresh: kept
    older = tmp_path / ".results.json.a1b2c3d4.tmp"  # pid-less and two days old: removed
    user = tmp_path / ".notes.tmp"  # not ours
    for p in (stale_file, stale_png, live, old_name, older, user):
        p.write_text("x")
    stale_dir.mkdir()
    (stale_dir / "images.npy").write_bytes(b"x")
    two_days = time.time() - 2 * 86400
    os.utime(older, (two_days, two_days))
    removed = set(remove_stale_temps(tmp_path))
    assert removed == {stale_file, stale_png, stale_dir, older}
    assert live.exists() and old_name.exists() and user.exists()


def test_a_concurrent_writers_temp_survives(tmp_path):
    """Another live process writing through atomic_path keeps its temporary while we clean up."""
    script = (
        "import sys, time; from diffuseg.atomicio import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('partial'); print(tmp, flush=True); sys.stdin.readline()\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path / "out.txt")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        tmp = tmp_path / os.path.basename(child.stdout.readline().strip())
        assert tmp.exists() and f".{child.pid}-" in tmp.name
        assert remove_stale_temps(tmp_path) == []
        assert tmp.exists()
        child.stdin.write("\n")
        child.stdin.flush()
        assert child.wait(timeout=60) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert (tmp_path / "out.txt").read_text() == "partial"


def test_killed_writer_leaves_a_temp_that_the_next_run_removes(tmp_path):
    script = (
        "import os, sys; from diffuseg.atomicio import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    tmp.write_text('partial'); os.kill(os.getpid(), 9)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "out.txt")], env=env, timeout=60)
    left = [p for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].name.startswith(".out.txt.")
    assert remove_stale_temps(tmp_path) == left
    assert not any(tmp_path.iterdir())
