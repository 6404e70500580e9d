"""Metrics on hand-computed 4x4 masks, estimator properties, and HD95 against MONAI and medpy."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from diffuseg.evaluation import metrics as M


def mask(*pixels: tuple[int, int]) -> torch.Tensor:
    out = torch.zeros(4, 4, dtype=torch.uint8)
    for r, c in pixels:
        out[r, c] = 1
    return out


A = mask((0, 0), (0, 1), (1, 0), (1, 1))  # top-left 2x2 block
B = mask((0, 0), (0, 1), (0, 2), (0, 3))  # top row; A ∩ B = 2 pixels, A ∪ B = 6
E = mask()  # empty


def test_dice_iou_by_hand():
    assert float(M.dice(A, B)) == pytest.approx(0.5)
    assert float(M.iou(A, B)) == pytest.approx(1 / 3)
    assert float(M.dice(A, A)) == 1.0 and float(M.iou(A, A)) == 1.0


def test_empty_policy_both_empty_is_one_one_empty_is_zero():
    assert float(M.dice(E, E)) == 1.0 and float(M.iou(E, E)) == 1.0
    assert float(M.dice(A, E)) == 0.0 and float(M.iou(E, A)) == 0.0
    assert float(M.pairwise_iou(E[None], E[None])[0, 0]) == 1.0
    assert float(M.pairwise_dice(E[None], E[None])[0, 0]) == 1.0


def test_batched_and_float_inputs():
    pred = torch.stack([A, B, E]).float() * 0.9  # 0.9 > 0.5 binarises to the same masks
    gt = torch.stack([B, B, E])
    assert M.dice(pred, gt).tolist() == pytest.approx([0.5, 1.0, 1.0])
    assert M.iou(pred, A).tolist() == pytest.approx([1.0, 1 / 3, 0.0])  # broadcast
    vol = torch.stack([A, B])  # one 3D volume (2, 4, 4)
    assert float(M.dice(vol, vol, dims=3)) == 1.0


def test_pairwise_matches_loop():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(5, 6, 7, generator=g) > 0.6
    b = torch.rand(3, 6, 7, generator=g) > 0.4
    want = torch.tensor([[float(M.iou(x, y)) for y in b] for x in a], dtype=torch.float64)
    assert torch.allclose(M.pairwise_iou(a, b), want)
    want_d = torch.tensor([[float(M.dice(x, y)) for y in b] for x in a], dtype=torch.float64)
    assert torch.allclose(M.pairwise_dice(a, b), want_d)


def test_ged_by_hand_both_estimators():
    s, y = torch.stack([A, E]), torch.stack([A, B])
    # d(S,Y) = [0, 2/3, 1, 1] -> mean 2/3; d(S,S'): one pair at 1; d(Y,Y'): one pair at 2/3
    assert M.ged(s, y, unbiased=False) == pytest.approx(4 / 3 - 2 / 4 - (4 / 3) / 4)
    assert M.ged(s, y, unbiased=True) == pytest.approx(4 / 3 - 1 - 2 / 3)


def test_ged_of_a_set_with_itself():
    s = torch.stack([A, B, E, A])
    assert M.ged(s, s, unbiased=False) == pytest.approx(0.0, abs=1e-12)


def test_unbiased_ged_has_zero_expectation_for_equal_distributions():
    """Enumerate every draw of 2 samples and 2 annotations from the same uniform law on {A, B, E}."""
    support = [A, B, E]
    draws = list(itertools.product(support, repeat=2))
    unbiased = [M.ged(torch.stack(s), torch.stack(y), True) for s in draws for y in draws]
    biased = [M.ged(torch.stack(s), torch.stack(y), False) for s in draws for y in draws]
    assert np.mean(unbiased) == pytest.approx(0.0, abs=1e-12)
    assert np.mean(biased) > 0.1  # the i = j zeros bias the plug-in estimator upwards


def test_ged_needs_two_for_unbiased():
    assert math.isnan(M.ged(A[None], torch.stack([A, B]), unbiased=True))
    assert not math.isnan(M.ged(A[None], torch.stack([A, B]), unbiased=False))


def test_empty_prediction_identity_matches_the_measured_floor():
    """For an always-empty prediction, GED_biased - GED_unbiased = E[d(Y,Y')]_unbiased / M and
    GED_unbiased = 2 (1 - Dice vs each annotator) - E[d(Y,Y')]_unbiased. With M = 4 the floor measured on 64
    LIDC slices (benchmarks/results/quality-long/lidc-floor.json: 0.7361, 0.6038) implies the Dice measured there."""
    g = torch.Generator().manual_seed(1)
    y = (torch.rand(4, 8, 8, generator=g) > 0.5) & (torch.rand(4, 1, 1, generator=g) > 0.4)
    s = torch.zeros(16, 8, 8, dtype=torch.bool)
    d_yy = M.diversity(y)
    dice_each = float(M.dice(s[:1], y).mean())
    assert M.ged(s, y, False) - M.ged(s, y, True) == pytest.approx(d_yy / 4)
    assert M.ged(s, y, True) == pytest.approx(2 * (1 - dice_each) - d_yy)
    d_yy_lidc = 4 * (0.7361 - 0.6038)
    assert 1 - (0.6038 + d_yy_lidc) / 2 == pytest.approx(0.4336, abs=0.001)


def test_ged_at_averages_disjoint_groups():
    g = torch.Generator().manual_seed(2)
    s = torch.rand(16, 5, 5, generator=g) > 0.5
    y = torch.rand(4, 5, 5, generator=g) > 0.5
    want = np.mean([M.ged(s[i : i + 4], y, False) for i in range(0, 16, 4)])
    assert M.ged_at(s, y, 4, unbiased=False) == pytest.approx(want)
    assert M.ged_at(s, y, 16, unbiased=True) == pytest.approx(M.ged(s, y, True))
    assert math.isnan(M.ged_at(s[:3], y, 4))


def test_diversity_by_hand():
    assert M.diversity(torch.stack([A, B, E])) == pytest.approx((2 / 3 + 1 + 1) / 3)
    assert M.diversity(torch.stack([E, E])) == 0.0
    assert math.isnan(M.diversity(A[None]))


def test_hungarian_iou_by_hand():
    assert M.hungarian_iou(torch.stack([A, B]), torch.stack([B, A])) == pytest.approx(1.0)
    # L = lcm(4, 2) = 4: A, A, B, B matched to four copies of A -> IoUs 1, 1, 1/3, 1/3
    assert M.hungarian_iou(torch.stack([A] * 4), torch.stack([A, B])) == pytest.approx(2 / 3)
    assert M.hungarian_iou(torch.stack([E, E]), E[None]) == 1.0


def test_fused_dice_and_majority():
    y = torch.stack([A, B, E, A])
    out = M.fused_dice(A, y)
    assert out["dice_annotator_mean"] == pytest.approx((1 + 0.5 + 0 + 1) / 4)
    assert out["dice_annotator_min"] == 0.0 and out["dice_annotator_max"] == 1.0
    assert torch.equal(M.majority(y), A.bool())  # (0,2),(0,3) have 1 vote of 4; A's pixels 2 or 3
    assert out["dice_majority"] == 1.0
    assert M.fused_dice(E, torch.stack([E, E]))["dice_majority"] == 1.0


def test_collective_insight_by_hand():
    # V(A - B) over 16 px: values +1 x2, -1 x2, 0 x12 -> variance 4/16; V(A - A) = 0
    out = M.collective_insight(torch.stack([A, B]), torch.stack([A, A]))
    assert out["combined_sensitivity"] == 1.0
    assert out["max_dice_matching"] == 1.0
    assert out["diversity_agreement"] == pytest.approx(0.75)
    assert out["ci"] == pytest.approx(3 * 0.75 / (1 + 0.75 + 0.75))
    same = M.collective_insight(torch.stack([A, B]), torch.stack([B, A]))
    assert same["ci"] == pytest.approx(1.0)
    missed = M.collective_insight(torch.stack([E, E]), torch.stack([A, B]))
    assert missed["combined_sensitivity"] == 0.0 and missed["max_dice_matching"] == 0.0
    assert missed["ci"] == 0.0


def _ncc_reference(samples: np.ndarray, gts: np.ndarray, eps: float = 1e-8) -> float:
    """The PHiSeg code's loops, with one-hot (background, foreground) channels."""

    def onehot(x):
        return np.stack([1 - x, x], axis=-1)

    def xent(m_samp, m_gt):
        return -np.sum(m_gt * np.log(m_samp + eps), axis=-1)

    s, y = onehot(samples.astype(float)), onehot(gts.astype(float))
    mean_seg = s.mean(0)
    e_ss = np.mean([xent(si, mean_seg) for si in s], axis=0)
    values = []
    for yj in y:
        e_sy = np.mean([xent(si, yj) for si in s], axis=0)
        a = (e_ss - e_ss.mean()) / (e_ss.std() * e_ss.size)
        v = (e_sy - e_sy.mean()) / e_sy.std()
        values.append(float(np.correlate(a.ravel(), v.ravel())[0]))
    return float(np.mean(values))


def test_ncc_matches_phiseg_reference():
    g = torch.Generator().manual_seed(3)
    s = torch.rand(6, 8, 8, generator=g) > 0.5
    y = torch.rand(4, 8, 8, generator=g) > 0.5
    assert M.ncc(s, y) == pytest.approx(_ncc_reference(s.numpy(), y.numpy()), rel=1e-9)
    soft = torch.rand(6, 8, 8, generator=g)
    assert M.ncc(soft, y) == pytest.approx(_ncc_reference(soft.double().numpy(), y.numpy()), rel=1e-9)


def test_ncc_undefined_for_constant_maps():
    assert math.isnan(M.ncc(torch.stack([A, A]), torch.stack([A])))


def test_ece_by_hand():
    s, y = torch.stack([A, E]), A[None]  # frequency 0.5 on A's 4 pixels, annotators say 1
    assert M.ece(s, y) == pytest.approx(2 / 16)
    assert M.ece(torch.stack([A, B]), torch.stack([B, A])) == 0.0
    assert M.ece(torch.stack([E]), torch.stack([E])) == 0.0


def test_calibration_bins_pool_across_cases():
    p1, q1 = torch.tensor([0.05, 0.95]), torch.tensor([0.0, 1.0])
    p2, q2 = torch.tensor([1.0]), torch.tensor([0.0])
    sums = M.calibration_bins(p1, q1, 10) + M.calibration_bins(p2, q2, 10)
    assert sums[:, 0].tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert M.ece_from_bins(sums) == pytest.approx((0.05 + abs(1.95 - 1.0)) / 3)


def test_hd95_by_hand_with_spacing():
    p, g = mask((1, 1)), mask((1, 3))
    assert M.hd95(p, g, spacing=(1.0, 2.0)) == pytest.approx(4.0)
    assert M.hd95(E, E) == 0.0
    assert math.isnan(M.hd95(A, E))
    assert M.hd95(E, A, spacing=(1.0, 2.0), one_empty="diagonal") == pytest.approx(math.sqrt(16 + 64))
    with pytest.raises(ValueError, match="nan, diagonal"):
        M.hd95(A, B, one_empty="inf")


def _blob(shape: tuple[int, ...], rng: np.random.Generator, margin: int) -> np.ndarray:
    """A random smooth shape, ``margin`` voxels off the image border (0: it may touch the border)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=2.5)
    inner = np.zeros(shape, bool)
    inner[tuple(slice(margin, n - margin) for n in shape)] = True
    out = (field > np.quantile(field[inner], 0.6)) & inner
    if not out.any():
        out[tuple(n // 2 for n in shape)] = True
    return out


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("margin", [2, 0])
@pytest.mark.parametrize(
    ("shape", "spacing"), [((32, 40), (1.0, 1.0)), ((30, 36), (0.7, 1.9)), ((12, 20, 18), (2.5, 0.8, 1.1))]
)
def test_hd95_against_monai_and_medpy(shape, spacing, margin):
    monai_metrics = pytest.importorskip("monai.metrics")
    medpy_binary = pytest.importorskip("medpy.metric.binary")
    rng = np.random.default_rng(sum(shape))
    for _ in range(4):
        p, g = _blob(shape, rng, margin), _blob(shape, rng, margin)
        want = monai_metrics.compute_hausdorff_distance(
            torch.from_numpy(p)[None, None], torch.from_numpy(g)[None, None], percentile=95, spacing=spacing
        )
        assert M.hd95(p, g, spacing) == pytest.approx(float(want), rel=1e-6)
        pooled = medpy_binary.hd95(p, g, voxelspacing=spacing)
        assert M.hd95(p, g, spacing, pooled=True) == pytest.approx(pooled, rel=1e-6)


def test_summarize_and_accumulator():
    acc = M.MetricAccumulator()
    acc.add("a", {"dice": 1.0, "hd95": 2.0})
    acc.add("b", {"dice": 0.5, "hd95": math.nan})
    acc.add("c", {"dice": 0.0})
    s = acc.summary()
    assert s["dice"]["mean"] == pytest.approx(0.5) and s["dice"]["std"] == pytest.approx(0.5)
    assert s["hd95"] == {"mean": 2.0, "std": 0.0, "median": 2.0, "min": 2.0, "max": 2.0, "n": 1, "n_undefined": 2}
    assert M.summarize([math.nan])["mean"] is None


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 6), st.integers(2, 5))
def test_set_metric_properties(seed, n, m):
    """Dice = 2 IoU / (1 + IoU); biased - unbiased GED = d_SS / N + d_YY / M >= 0; scores in range."""
    g = torch.Generator().manual_seed(seed)
    s = torch.rand(n, 5, 6, generator=g) > torch.rand(n, 1, 1, generator=g)
    y = torch.rand(m, 5, 6, generator=g) > torch.rand(m, 1, 1, generator=g)
    j, d = M.pairwise_iou(s, y), M.pairwise_dice(s, y)
    assert torch.allclose(d, 2 * j / (1 + j))
    gap = M.ged(s, y, unbiased=False) - M.ged(s, y, unbiased=True)
    assert gap == pytest.approx(M.diversity(s) / n + M.diversity(y) / m, abs=1e-12)
    assert -2.0 <= M.ged(s, y) <= 2.0 and 0.0 <= M.ged(s, y, unbiased=False) <= 2.0
    assert 0.0 <= M.hungarian_iou(s, y) <= 1.0
    ci = M.collective_insight(s, y)
    assert all(0.0 <= v <= 1.0 for v in ci.values())
