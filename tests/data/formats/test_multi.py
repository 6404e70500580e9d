"""The multi-annotator layout: one mask folder, or one mask suffix, per annotator."""

from __future__ import annotations

from datafixtures import disc, grey, png

from diffuseg.data.formats import open_dataset


def test_multi_annotator_folders_and_suffixes(tmp_path):
    for k in range(3):
        for i in range(2):
            png(tmp_path / "a" / "images" / f"x{i}.png", grey(10, i))
            png(tmp_path / "a" / f"masks_{k}" / f"x{i}.png", disc(10, k + 1))
            png(tmp_path / "b" / f"y{i}.png", grey(10, i))
            png(tmp_path / "b" / f"y{i}_rater{k}.png", disc(10, k + 1))
    for sub in ("a", "b"):
        reader = open_dataset(tmp_path / sub)
        assert reader.layout == "multi" and len(reader) == 2
        masks = reader[0].masks
        assert masks.shape == (3, 10, 10)
        assert masks[0].sum() < masks[1].sum() < masks[2].sum()
