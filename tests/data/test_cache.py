"""The decoded-dataset cache: built once and reused, never half-written, bit-packed for binary masks."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch
from datafixtures import grey, label_map, paired, png

from diffuseg.config import DataConfig
from diffuseg.data.cache import decode_all, load_cached
from diffuseg.data.dataset import build_datasets
from diffuseg.data.formats import open_dataset
from diffuseg.data.synthetic import write_synthetic
from diffuseg.data.transforms import resize_pair
from diffuseg.errors import DatasetError


def test_cache_is_built_once_and_reused(tmp_path):
    root = paired(tmp_path / "d", n=4)
    reader = open_dataset(root)
    first = load_cached(reader, range(4), 16, 1, tmp_path / "cache")
    (folder,) = [p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]
    stamp = os.stat(folder / "images.npy").st_mtime_ns
    again = load_cached(open_dataset(root), range(4), 16, 1, tmp_path / "cache")
    assert os.stat(folder / "images.npy").st_mtime_ns == stamp
    image, masks = again.item(2)
    ref_image, ref_masks = resize_pair(reader[2].image, reader[2].masks, 16)
    assert torch.allclose(image, ref_image, atol=1e-3) and torch.equal(masks, ref_masks)
    assert isinstance(again.images, np.memmap) and first.case_ids == again.case_ids
    clone = pickle.loads(pickle.dumps(again))
    assert isinstance(clone.images, np.memmap) and np.array_equal(clone.images, again.images)
    # another size, or a changed file, is another cache entry
    load_cached(reader, range(4), 8, 1, tmp_path / "cache")
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 2


def test_cache_build_reports_every_problem(tmp_path):
    root = paired(tmp_path / "d", n=3)
    (root / "images" / "0_a.png").write_bytes(b"broken")
    with pytest.raises(DatasetError, match="unreadable or corrupt"):
        build_datasets(DataConfig(root=str(root), image_size=16), cache_dir=tmp_path / "c")
    assert not any((tmp_path / "c").glob("*/meta.json"))


def test_parallel_decode_matches_serial(tmp_path):
    root = write_synthetic(tmp_path / "s", 24)
    reader = open_dataset(root)
    one = decode_all(reader, range(24), 16, 4, workers=1)
    two = decode_all(reader, range(24), 16, 4, workers=2, chunk=8)
    assert all(np.array_equal(a, b) for a, b in zip(one, two))


def test_the_cache_bar_moves_with_every_item_in_process(tmp_path, monkeypatch):
    """One process: the bar advances per item (a chunk of slow items would be seconds of silence); workers: per
    chunk of at most 32 items."""
    import tqdm

    steps: list[int] = []

    class Bar(tqdm.tqdm):
        def update(self, n=1):
            steps.append(n)
            return super().update(n)

    monkeypatch.setattr(tqdm, "tqdm", Bar)
    reader = open_dataset(write_synthetic(tmp_path / "s", 70))
    decode_all(reader, range(70), 16, 4, workers=1)
    assert steps == [1] * 70
    steps.clear()
    decode_all(reader, range(70), 16, 4, workers=2)
    assert sorted(steps) == [6, 32, 32]


def test_binary_cache_is_bit_packed(tmp_path):
    png(tmp_path / "d" / "images" / "a.png", grey(16))
    png(tmp_path / "d" / "masks" / "a.png", (label_map(16) > 0).astype(np.uint8) * 255)
    reader = open_dataset(tmp_path / "d")
    arrays = load_cached(reader, [0], 16, 1, tmp_path / "cache")
    assert arrays.masks.shape == (1, 1, 16, 2) and arrays.atoms == 1
    assert arrays.item(0)[1][0].numpy().tolist() == (label_map(16) > 0).astype(np.uint8).tolist()
