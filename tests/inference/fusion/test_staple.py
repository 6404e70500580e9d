"""Binary STAPLE against SimpleITK's STAPLEImageFilter, and its degenerate cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from raterdata import binary_raters

from diffuseg.inference.fusion.staple import staple

sitk = pytest.importorskip("SimpleITK")


def _sitk_staple(masks: np.ndarray) -> tuple[np.ndarray, list[float], list[float], int]:
    """SimpleITK STAPLE of ``masks`` (R, H, W) uint8: probability, sensitivity, specificity, iterations."""
    f = sitk.STAPLEImageFilter()
    f.SetForegroundValue(1)
    f.SetMaximumIterations(50)
    out = f.Execute([sitk.GetImageFromArray(m.astype(np.uint8)) for m in masks])
    return (
        sitk.GetArrayFromImage(out),
        list(f.GetSensitivity()),
        list(f.GetSpecificity()),
        f.GetElapsedIterations(),
    )


@pytest.mark.parametrize(
    ("r", "flip", "seed"), [(5, 0.0, 0), (8, 0.02, 1), (25, 0.01, 2), (3, 0.1, 3), (1, 0.05, 4), (70, 0.01, 5)]
)
def test_staple_matches_simpleitk(r: int, flip: float, seed: int) -> None:
    masks = binary_raters(np.random.default_rng(seed), r, 48, flip)
    want, sens, spec, its = _sitk_staple(masks)
    got = staple(torch.from_numpy(masks)[None], max_iter=50)
    np.testing.assert_allclose(got.probability[0].numpy(), want, atol=1e-8)
    np.testing.assert_allclose(got.sensitivity[0].numpy(), sens, atol=1e-10)
    np.testing.assert_allclose(got.specificity[0].numpy(), spec, atol=1e-10)
    # ITK reports the index of the iteration it stopped at, or the maximum when it did not converge
    assert got.iterations[0].item() == (its + 1 if got.converged[0] else its)
    assert np.array_equal(got.mask()[0].numpy() > 0, want >= 0.5)


def test_staple_prior_is_mean_foreground_fraction() -> None:
    masks = binary_raters(np.random.default_rng(4), 6, 32, 0.01)
    got = staple(torch.from_numpy(masks)[None])
    assert got.prior[0].item() == pytest.approx(masks.mean())


def test_staple_float32_close_to_simpleitk() -> None:
    masks = binary_raters(np.random.default_rng(5), 10, 64, 0.01)
    want, *_ = _sitk_staple(masks)
    got = staple(torch.from_numpy(masks)[None], dtype=torch.float32)
    np.testing.assert_allclose(got.probability[0].double().numpy(), want, atol=1e-4)


def test_staple_batch_equals_one_by_one() -> None:
    rng = np.random.default_rng(6)
    cases = [binary_raters(rng, 7, 32, f) for f in (0.0, 0.05, 0.2)]
    batch = staple(torch.from_numpy(np.stack(cases)))
    for i, case in enumerate(cases):
        one = staple(torch.from_numpy(case)[None])
        torch.testing.assert_close(batch.probability[i], one.probability[0], rtol=0, atol=1e-12)
        assert batch.iterations[i] == one.iterations[0]


def test_staple_identical_raters_give_that_mask() -> None:
    mask = torch.zeros(16, 16, dtype=torch.uint8)
    mask[3:9, 5:12] = 1
    got = staple(mask.expand(4, 16, 16)[None])
    assert torch.equal(got.probability[0], mask.double())
    assert torch.equal(got.mask()[0], mask.double())


def test_staple_all_empty_and_all_full() -> None:
    empty = torch.zeros(1, 5, 8, 8, dtype=torch.uint8)
    full = torch.ones(1, 5, 8, 8, dtype=torch.uint8)
    got = staple(torch.cat([empty, full]))
    assert torch.equal(got.probability[0], torch.zeros(8, 8, dtype=torch.float64))
    assert torch.equal(got.probability[1], torch.ones(8, 8, dtype=torch.float64))
    assert not torch.isnan(got.sensitivity).any() and not torch.isnan(got.specificity).any()


def test_staple_3d_and_bool_input() -> None:
    masks = torch.from_numpy(binary_raters(np.random.default_rng(7), 4, 16, 0.05)).reshape(1, 4, 4, 8, 8) > 0
    got = staple(masks)
    assert got.probability.shape == (1, 4, 8, 8)


def test_staple_rejects_bad_shape() -> None:
    with pytest.raises(ValueError, match="B, R"):
        staple(torch.zeros(4, 4))


@pytest.mark.realdata
def test_staple_matches_simpleitk_on_lidc_annotators() -> None:
    """The 4 LIDC annotators of real slices (with their real disagreement) fused by both implementations."""
    root = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "lidc"
    if not root.is_dir():
        pytest.skip(f"real data not found at {root}")
    from diffuseg.data.formats import open_dataset

    reader = open_dataset(root, layout="lidc")
    checked = 0
    for index in range(0, len(reader), max(1, len(reader) // 40)):
        masks = reader[index].masks.numpy()
        if masks.shape[0] < 2 or masks.sum() == 0:  # SimpleITK gives NaN for all-empty raters
            continue
        want, sens, spec, _ = _sitk_staple(masks)
        got = staple(torch.from_numpy(masks)[None], max_iter=50)
        np.testing.assert_allclose(got.probability[0].numpy(), want, atol=1e-8)
        np.testing.assert_allclose(got.sensitivity[0].numpy(), sens, atol=1e-10)
        np.testing.assert_allclose(got.specificity[0].numpy(), spec, atol=1e-10)
        checked += 1
    assert checked >= 20
