"""``verify_dataset`` and ``diffuseg verify`` on the bad-input corpus and on good data."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from datafixtures import CORPUS, lidc, paired, png, shared

from diffuseg.cli import main
from diffuseg.data.verify import verify_dataset
from diffuseg.errors import DatasetError


def test_each_bad_input_is_named(bad_dataset):
    root, message, names = bad_dataset
    with pytest.raises(DatasetError) as info:
        verify_dataset(root)
    lines = [p for p in info.value.problems if message in p]
    assert lines, info.value.problems
    assert any(names in line for line in lines), lines


def test_cli_exit_code_and_no_traceback(bad_dataset, capsys):
    root, message, _ = bad_dataset
    assert main(["verify", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert message in err
    assert "Traceback" not in err


def test_every_problem_listed_at_once(tmp_path):
    root = paired(tmp_path / "many", n=4)
    (root / "images" / "1_a.png").write_bytes(b"garbage")
    png(root / "images" / "9_a.png", np.zeros((20, 20), np.uint8))
    png(root / "masks" / "8_b.png", np.zeros((20, 20), np.uint8))
    png(root / "masks" / "2_a.png", np.zeros((16, 16), np.uint8))
    with pytest.raises(DatasetError) as info:
        verify_dataset(root)
    text = str(info.value)
    for fragment in ("unreadable or corrupt", "image without a mask", "mask without an image", "mask size 16x16"):
        assert fragment in text
    assert text.startswith("4 problem(s)")


def test_good_data_passes(tmp_path, capsys):
    root = lidc(tmp_path / "ok")
    summary = verify_dataset(root)
    assert "layout: lidc" in summary and "4 (4 cases)" in summary
    assert main(["verify", str(root)]) == 0
    assert "OK" in capsys.readouterr().out


def test_missing_folder_and_ambiguous_layout(tmp_path, capsys):
    assert main(["verify", str(tmp_path / "nope")]) == 2
    assert "not found" in capsys.readouterr().err
    root = lidc(tmp_path / "amb")
    paired(root)  # images/ + masks/ beside a LIDC tree: two layouts match
    assert main(["verify", str(root)]) == 2
    err = capsys.readouterr().err
    assert "ambiguous" in err and "--layout" in err
    assert main(["verify", str(root), "--layout", "paired"]) == 0


@pytest.mark.slow
def test_console_script_exit_code(tmp_path):
    script = Path(sys.executable).with_name("diffuseg")
    if not script.exists():
        pytest.skip("the diffuseg console script is not installed beside this python")
    root = tmp_path / "bad"
    root.mkdir()
    CORPUS["corrupt"][0](root)
    done = subprocess.run([str(script), "verify", str(root)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "unreadable or corrupt" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.realdata
def test_real_brats_sample_verifies():
    assert "layout: brats" in verify_dataset(shared("brats_sample"))


@pytest.mark.realdata
def test_real_ddti_subset_verifies(tmp_path):
    source = shared("ddti")
    for image in sorted((source / "cropped").glob("*.png"))[:12]:
        for folder, suffix in (("cropped", ".png"), ("mask", ".gif")):
            (tmp_path / folder).mkdir(exist_ok=True)
            shutil.copy(source / folder / f"{image.stem}{suffix}", tmp_path / folder)
    assert "layout: paired" in verify_dataset(tmp_path)


@pytest.mark.realdata
def test_real_lidc_subset_verifies(tmp_path):
    source = shared("lidc") / "LIDC-IDRI-slices"
    for patient in ("LIDC-IDRI-0001", "LIDC-IDRI-0003"):
        shutil.copytree(source / patient, tmp_path / "LIDC-IDRI-slices" / patient)
    assert "layout: lidc" in verify_dataset(tmp_path)


def test_cli_foreground_option(tmp_path, capsys):
    root = tmp_path / "labels"
    CORPUS["non_binary"][0](root)
    assert main(["verify", str(root)]) == 2
    capsys.readouterr()
    assert main(["verify", str(root), "--foreground", "1,2"]) == 0
