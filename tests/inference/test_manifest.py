"""The input records of a prediction manifest: a changed file is never taken for the one predicted."""

from __future__ import annotations

import os
from pathlib import Path

from diffuseg.inference.manifest import input_record, same_input


def test_unchanged_file_is_recognised_without_hashing(tmp_path: Path, monkeypatch) -> None:
    from diffuseg.inference import manifest

    f = tmp_path / "a.png"
    f.write_bytes(b"one")
    record = input_record(f)
    monkeypatch.setattr(manifest, "file_sha256", lambda path: "never called")
    assert same_input(record, f)["sha256"] == record["sha256"]


def test_changed_file_is_refused_even_with_its_size_and_mtime_forged(tmp_path: Path) -> None:
    f = tmp_path / "a.png"
    f.write_bytes(b"one")
    record = input_record(f)
    f.write_bytes(b"two")  # same size
    os.utime(f, ns=(record["mtime_ns"], record["mtime_ns"]))
    assert same_input(record, f) is None
    f.write_bytes(b"one")
    assert same_input(record, f)["sha256"] == record["sha256"]  # same bytes again: by its digest


def test_missing_file_or_record(tmp_path: Path) -> None:
    f = tmp_path / "a.png"
    f.write_bytes(b"one")
    assert same_input(None, f) is None and same_input({}, f) is None
    record = input_record(f)
    f.unlink()
    assert same_input(record, f) is None
