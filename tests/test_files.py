"""Files as the umask says, temporaries of killed writers cleaned, nothing half-written (``diffuseg.files``)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from diffuseg.files import atomic_folder, atomic_path, remove_output, remove_stale_temps, temp_prefix, write_text_atomic
from diffuseg.presets import load_config

TINY = [
    "data.image_size=16",
    "model.options={channels: [8, 8, 16], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 16}",
    "sample.steps=2",
    "sample.samples=2",
    "sample.batch_size=2",
]


@pytest.fixture
def umask():
    """Set the process umask for one test, then put the old one back."""
    old = os.umask(0o022)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)])
def test_atomic_files_and_cache_folders_follow_the_umask(tmp_path, umask, mask, file_mode, dir_mode):
    from diffuseg.data.cache import load_cached
    from diffuseg.data.formats import open_dataset

    umask(mask)
    write_text_atomic(tmp_path / "a.txt", "x")
    assert _mode(tmp_path / "a.txt") == file_mode  # mkstemp alone gives 0600

    data = tmp_path / "data"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    Image.fromarray(np.full((8, 8), 100, np.uint8)).save(data / "images" / "c.png")
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(data / "masks" / "c.png")
    reader = open_dataset(str(data), "paired", ())
    arrays = load_cached(reader, [0], 8, 1, tmp_path / "cache")
    assert _mode(arrays.folder) == dir_mode  # mkdtemp alone gives 0700
    assert all(_mode(p) == file_mode for p in arrays.folder.iterdir())


def test_every_prediction_file_is_readable_under_umask_022(tmp_path, umask):
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.inference.predict import predict
    from diffuseg.training.module import DiffusionModule

    umask(0o022)
    config = load_config("lidc-central", TINY)
    ckpt = tmp_path / "last.ckpt"
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, ckpt)
    assert _mode(ckpt) == 0o644
    (tmp_path / "in").mkdir()
    Image.fromarray(np.arange(100, dtype=np.uint8).reshape(10, 10)).save(tmp_path / "in" / "x.png")
    predict(ckpt, tmp_path / "in", tmp_path / "out", save_samples=True)
    written = [p for p in (tmp_path / "out").rglob("*")]
    assert any(p.name == "x.png" for p in written) and any(p.parent.name == "samples" for p in written)
    for p in written:
        assert _mode(p) == (0o755 if p.is_dir() else 0o644), p


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / (temp_prefix("last.ckpt").replace(f"~{os.getpid()}~", f"~{dead.pid}~") + "abc.tmp")
    stale.write_bytes(b"half")
    stale_dir = tmp_path / (temp_prefix("cachekey").replace(f"~{os.getpid()}~", f"~{dead.pid}~") + "xyz")
    stale_dir.mkdir()
    (stale_dir / "images.npy").write_bytes(b"half")
    live = tmp_path / (temp_prefix("config.yaml") + "def.tmp")  # this process's: a live writer
    live.write_bytes(b"busy")
    other_host = tmp_path / f".x.~otherhost~{dead.pid}~q.tmp"
    other_host.write_bytes(b"?")
    user_file = tmp_path / ".hidden.tmp"
    user_file.write_bytes(b"mine")
    assert sorted(remove_stale_temps(tmp_path)) == sorted([stale, stale_dir])
    assert live.exists() and other_host.exists() and user_file.exists()


def test_a_writer_killed_inside_atomic_path_leaves_a_temp_the_next_run_removes(tmp_path):
    code = (
        "import os, sys\n"
        "from diffuseg.files import atomic_path\n"
        f"with atomic_path({str(tmp_path / 'x.json')!r}) as tmp:\n"
        "    tmp.write_text('half')\n"
        "    os._exit(9)\n"  # as if killed: no clean-up runs
    )
    subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    temps = [p for p in tmp_path.iterdir() if p.name.startswith(".x.json.")]
    assert len(temps) == 1 and not (tmp_path / "x.json").exists()
    assert remove_stale_temps(tmp_path) == temps
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_still_cleans_up_when_the_block_raises(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "y.txt") as tmp:
        tmp.write_text("x")
        raise RuntimeError
    assert list(tmp_path.iterdir()) == []


def test_atomic_folder_puts_a_whole_folder_in_place_or_leaves_the_old_one(tmp_path, umask):
    umask(0o022)
    with atomic_folder(tmp_path / "series") as tmp:
        (tmp / "0000.dcm").write_text("new")
        assert not (tmp_path / "series").exists()  # nothing at the name while it is written
    assert _mode(tmp_path / "series") == 0o755 and (tmp_path / "series" / "0000.dcm").read_text() == "new"
    with pytest.raises(RuntimeError), atomic_folder(tmp_path / "series") as tmp:
        (tmp / "0000.dcm").write_text("half")
        raise RuntimeError
    assert [p.name for p in tmp_path.iterdir()] == ["series"]  # the old folder, untouched; no temporary
    assert [p.read_text() for p in (tmp_path / "series").iterdir()] == ["new"]
    with atomic_folder(tmp_path / "series") as tmp:  # a rewrite replaces the old folder whole
        (tmp / "0001.dcm").write_text("again")
    assert [p.name for p in tmp_path.iterdir()] == ["series"]
    assert [p.name for p in (tmp_path / "series").iterdir()] == ["0001.dcm"]
    remove_output(tmp_path / "series")
    write_text_atomic(tmp_path / "x.txt", "x")
    remove_output(tmp_path / "x.txt")
    remove_output(tmp_path / "gone")
    assert list(tmp_path.iterdir()) == []
