"""A binary checkpoint from before several classes (issue 15) still loads and predicts the same files."""

from __future__ import annotations

from pathlib import Path

from tinydata import make_lidc_like

from diffuseg.cli import main

HERE = Path(__file__).resolve().parent / "before-classes"


def test_old_binary_checkpoint_predicts_the_same_masks(tmp_path, one_thread):
    data = make_lidc_like(tmp_path / "data", patients=2, slices=2)
    out = tmp_path / "pred"
    code = main(["predict", str(HERE / "binary-d312457.ckpt"), str(data), str(out), "--samples", "3", "--save-samples"])
    assert code in (0, None)
    expected = sorted(p.relative_to(HERE / "expected") for p in (HERE / "expected").rglob("*.png"))
    assert len(expected) == 4 * (1 + 1 + 3)  # fused, uncertainty, 3 samples per case
    written = sorted(p.relative_to(out) for p in out.rglob("*.png"))
    assert written == expected
    different = [str(p) for p in expected if (out / p).read_bytes() != (HERE / "expected" / p).read_bytes()]
    assert not different, different
