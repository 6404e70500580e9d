"""Uncertainty-error metrics against independent computations: scikit-learn's AUROC and average precision, scipy's
Spearman, a risk-coverage curve worked out by hand, equal-mass bins against a pixel-by-pixel reference; and the
stated policies (no error pixel, constant uncertainty, one member, empty union, nothing marked)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import spearmanr
from sklearn.metrics import average_precision_score, roc_auc_score

from diffuseg.evaluation import metrics as M
from diffuseg.evaluation import uncertainty_metrics as U
from diffuseg.evaluation.case_metrics import case_metrics, class_masks
from diffuseg.labels import LabelScheme, label_scheme

ACDC = label_scheme([{"name": n, "values": [v]} for n, v in (("RV", 1), ("Myo", 2), ("LV", 3))])


def _masks(seed: int, k: int, a: int, shape=(9, 7)):
    """K members, a fused mask (their majority vote) and A annotators: random blobs of varied density."""
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(shape, generator=g)
    samples = base[None] + 0.4 * torch.rand(k, *shape, generator=g) > 0.8
    annotations = base[None] + 0.4 * torch.rand(a, *shape, generator=g) > 0.75
    fused = 2 * samples.sum(0) >= k
    return samples, fused, annotations


@pytest.mark.parametrize("seed", range(6))
def test_pixel_auroc_and_auprc_are_sklearns(seed):
    samples, fused, annotations = _masks(seed, k=5 + seed, a=1 + seed % 4)
    row = U.case_uncertainty_metrics(samples, fused, annotations, bins=10)
    u = (samples != fused[None]).double().mean(0).numpy().ravel()  # the share of members that differ
    error = (fused != M.majority(annotations)).numpy().ravel()
    assert 0 < error.sum() < error.size
    assert row["pixel_auroc"] == pytest.approx(roc_auc_score(error, u), abs=1e-12)
    assert row["pixel_auprc"] == pytest.approx(average_precision_score(error, u), abs=1e-12)
    assert row["pixel_error_rate"] == pytest.approx(error.mean())


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 6), st.booleans()), min_size=2, max_size=60))
def test_counts_pooled_over_cases_are_sklearns_on_all_pixels(pixels):
    """Scores in sixths with many ties, cut into two cases whose counts are added: AUROC and AP of the union."""
    scores = np.array([s / 6 for s, _ in pixels])
    labels = np.array([e for _, e in pixels])
    half = len(pixels) // 2
    pooled = U.ScoreCounts.of(scores[:half], labels[:half]) + U.ScoreCounts.of(scores[half:], labels[half:])
    assert pooled.pixels() == (len(pixels), int(labels.sum()))
    if 0 < labels.sum() < len(labels):
        assert pooled.auroc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    else:
        assert math.isnan(pooled.auroc())
    if labels.any():
        assert pooled.auprc() == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    else:
        assert math.isnan(pooled.auprc())


def test_no_error_pixel_is_undefined_and_counted():
    """Empty reference and empty fused mask (and members that mark something): no error pixel, so AUROC and
    AUPRC are undefined (NaN), left out of the summary mean and counted in n_undefined."""
    samples = torch.zeros(4, 6, 6, dtype=torch.bool)
    samples[0, 2:4, 2:4] = True  # one member sees something the fused mask and the annotators do not
    fused, annotations = torch.zeros(6, 6, dtype=torch.bool), torch.zeros(3, 6, 6, dtype=torch.bool)
    row = U.case_uncertainty_metrics(samples, fused, annotations, bins=10)
    assert math.isnan(row["pixel_auroc"]) and math.isnan(row["pixel_auprc"]) and row["pixel_error_rate"] == 0
    assert row["case_uncertainty"] == pytest.approx(0.25)  # 1 of 4 members over its 4 pixels
    acc = M.MetricAccumulator()
    acc.add("empty", row)
    acc.add("other", U.case_uncertainty_metrics(*_masks(1, 5, 2), bins=10))
    assert acc.summary()["pixel_auroc"]["n"] == 1 and acc.summary()["pixel_auroc"]["n_undefined"] == 1


def test_constant_uncertainty_and_one_member():
    """One member is its own fused mask: ``u = 0`` everywhere, AUROC 0.5 by the tie rule, AUPRC the error rate
    (a random ranking), case score 0; calibration is still defined over the marked pixels."""
    samples, _, annotations = _masks(3, k=1, a=4)
    row = U.case_uncertainty_metrics(samples, samples[0], annotations, bins=10)
    error = (samples[0] != M.majority(annotations)).numpy().ravel()
    assert 0 < error.sum() < error.size
    assert row["pixel_auroc"] == 0.5 == roc_auc_score(error, np.zeros(error.size))
    assert row["pixel_auprc"] == pytest.approx(error.mean())
    assert row["case_uncertainty"] == 0.0
    p, q = samples.double().mean(0), annotations.double().mean(0)
    marked = p > 0
    assert row["ece_marked"] == pytest.approx(float((p[marked] - q[marked]).mean().abs()))  # one value of p


def test_nothing_marked():
    """No member marks anything: the case score is 0 (all agree nothing is there), ECE over marked pixels NaN."""
    samples, fused = torch.zeros(3, 5, 5, dtype=torch.bool), torch.zeros(5, 5, dtype=torch.bool)
    annotations = torch.zeros(2, 5, 5, dtype=torch.bool)
    annotations[:, 1:3, 1:3] = True  # a missed lesion
    row = U.case_uncertainty_metrics(samples, fused, annotations, bins=10)
    assert row["case_uncertainty"] == 0.0 and math.isnan(row["ece_marked"])
    assert row["pixel_auroc"] == 0.5 and row["pixel_error_rate"] == pytest.approx(4 / 25)


def test_case_score_by_hand():
    """Members 1100 / 1110 / 0000 over four pixels, fused 1100: union {0, 1, 2}, u = (1/3, 1/3, 1/3, 0)."""
    samples = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.bool)
    fused = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    row = U.case_uncertainty_metrics(samples, fused, fused[None], bins=2)
    assert row["case_uncertainty"] == pytest.approx(1 / 3)
    # p = 2/3, 2/3, 1/3 on the marked pixels, q = 1, 1, 0: two equal-mass bins of 1.5 pixels each
    # bin 1: pixel 2 (p 1/3, q 0) and half of the p = 2/3 group; bin 2: the other 1.5 pixels of p = 2/3, q = 1
    bin1 = abs((1 / 3 + 0.5 * 2 / 3) - (0 + 0.5 * 1))
    bin2 = abs(1.5 * 2 / 3 - 1.5 * 1)
    assert row["ece_marked"] == pytest.approx((bin1 + bin2) / 3)


def test_risk_coverage_by_hand():
    """Five cases (score, risk): A (0.1, 0.0), B (0.2, 0.3), C (0.2, 0.1), D (0.5, 0.6), E (0.9, 0.4).

    By score: A, then B and C tied, then D, E. Selective risks at coverage 1/5 .. 5/5: A alone 0; two cases:
    A and one of B, C, expected (0 + 0.2) / 2 = 0.1; three: (0 + 0.4) / 3; four: 1.0 / 4; five: 1.4 / 5.
    Optimal order by risk 0, 0.1, 0.3, 0.4, 0.6: 0, 0.05, 0.4/3, 0.2, 0.28. Random: the mean risk 0.28."""
    scores, risks = [0.1, 0.2, 0.2, 0.5, 0.9], [0.0, 0.3, 0.1, 0.6, 0.4]
    got = U.failure_detection(scores, risks)
    curve = [0.0, 0.1, 0.4 / 3, 0.25, 0.28]
    optimal = [0.0, 0.05, 0.4 / 3, 0.2, 0.28]
    assert got["curve"]["risk"] == pytest.approx(curve)
    assert got["curve"]["optimal"] == pytest.approx(optimal)
    assert got["curve"]["coverage"] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0])
    assert got["aurc"] == pytest.approx(sum(curve) / 5)
    assert got["aurc_optimal"] == pytest.approx(sum(optimal) / 5)
    assert got["aurc_random"] == pytest.approx(0.28)
    assert got["e_aurc"] == pytest.approx((sum(curve) - sum(optimal)) / 5)
    assert got["cases"] == 5
    assert got["spearman"] == pytest.approx(spearmanr(scores, risks).statistic)


def test_constant_score_is_the_random_reference_and_has_no_spearman():
    risks = [0.0, 0.3, 0.1, 0.6, 0.4]
    got = U.failure_detection([0.2] * 5, risks)
    assert got["curve"]["risk"] == pytest.approx([0.28] * 5)
    assert got["aurc"] == pytest.approx(got["aurc_random"]) and math.isnan(got["spearman"])
    empty = U.failure_detection([math.nan], [0.5])
    assert empty["cases"] == 0 and math.isnan(empty["aurc"])


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.integers(0, 5)), min_size=3, max_size=30))
def test_spearman_is_scipys(pairs):
    x, y = [a for a, _ in pairs], [b for _, b in pairs]
    got = U.spearman(x, y)
    if len(set(x)) < 2 or len(set(y)) < 2:
        assert math.isnan(got)
    else:
        assert got == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 8), st.integers(0, 4)), min_size=1, max_size=80), st.integers(1, 15))
def test_equal_mass_bins_are_never_empty_and_keep_every_pixel(pixels, bins):
    p = np.array([a / 8 for a, _ in pixels])
    q = np.array([b / 4 for _, b in pixels])
    table = U.FrequencyTable.of(p[: len(p) // 2], q[: len(q) // 2]) + U.FrequencyTable.of(
        p[len(p) // 2 :], q[len(q) // 2 :]
    )
    sums = table.equal_mass_bins(bins)
    assert sums.shape == (bins, 3)
    assert sums[:, 0] == pytest.approx(np.full(bins, len(p) / bins))  # equal mass, none empty
    assert sums.sum(0) == pytest.approx([len(p), p.sum(), q.sum()])
    means = sums[:, 1] / sums[:, 0]
    assert np.all(np.diff(means) >= -1e-12)  # bins follow p


@pytest.mark.parametrize("bins", [2, 3, 6])
def test_equal_mass_bins_match_chunks_of_sorted_pixels(bins):
    """With n divisible by the bins: the sorted pixels in chunks of n / bins, each pixel's q replaced by its
    tie group's mean (ties split in proportion)."""
    g = np.random.default_rng(bins)
    p = g.integers(0, 5, 36) / 4
    q = g.integers(0, 3, 36) / 2
    group_mean = {v: q[p == v].mean() for v in np.unique(p)}
    order = np.argsort(p, kind="stable")
    ps, qs = p[order], np.array([group_mean[v] for v in p[order]])
    chunks = np.split(np.arange(36), bins)
    want = np.array([[len(c), ps[c].sum(), qs[c].sum()] for c in chunks])
    assert U.FrequencyTable.of(p, q).equal_mass_bins(bins) == pytest.approx(want)


def test_a_calibrated_ensemble_lies_on_the_diagonal():
    """Annotators that are the members themselves: q = p at every pixel, so every bin is on the diagonal and
    ECE is 0. Annotators drawn with probability p at each pixel: ECE near 0."""
    samples, fused, _ = _masks(11, k=8, a=1, shape=(40, 40))
    row = U.case_uncertainty_metrics(samples, fused, samples, bins=10)
    assert row["ece_marked"] == pytest.approx(0.0, abs=1e-12)
    g = torch.Generator().manual_seed(0)
    p = samples.double().mean(0)
    annotators = torch.rand(400, *p.shape, generator=g, dtype=torch.float64) < p
    table = U.FrequencyTable.of(p, annotators.double().mean(0)).marked()
    sums = table.equal_mass_bins(10)
    assert sums[:, 2] / sums[:, 0] == pytest.approx(sums[:, 1] / sums[:, 0], abs=0.05)
    assert table.ece(10) < 0.02


def test_case_metrics_keys_binary_and_per_class():
    samples, fused, annotations = _masks(4, k=6, a=3)
    row = case_metrics(samples[:, None].long(), fused[None].long(), annotations[:, None].long(), LabelScheme())
    assert row["pixel_auroc"] == U.case_uncertainty_metrics(samples, fused, annotations, 10)["pixel_auroc"]
    g = torch.Generator().manual_seed(2)
    atoms = torch.randint(0, 4, (9, 8, 8), generator=g)
    members, annot, fused_atoms = atoms[:5], atoms[5:8], atoms[8]
    row = case_metrics(members[:, None], fused_atoms[None], annot[:, None], ACDC)
    s, f, y = (class_masks(ACDC, x) for x in (members, fused_atoms, annot))
    for c, name in enumerate(ACDC.names):
        want = U.case_uncertainty_metrics(s[:, c], f[c], y[:, c], 10)
        assert all(row[f"{k}/{name}"] == pytest.approx(v, nan_ok=True) for k, v in want.items())
    assert row["pixel_auroc"] == pytest.approx(np.mean([row[f"pixel_auroc/{n}"] for n in ACDC.names]))


def test_pool_over_cases_and_classes():
    """The pooled numbers of three 3-class cases: per class sklearn over that class's pixels of every case, and
    over every (pixel, class) pair; failure detection from the case rows, per class too."""
    pool, rows, per_class, pairs = U.UncertaintyPool(ACDC.names), [], {n: [] for n in ACDC.names}, []
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        atoms = torch.randint(0, 4, (8, 6, 6), generator=g)
        s, f, y = (class_masks(ACDC, x) for x in (atoms[:4], atoms[4], atoms[5:]))
        pool.add(s, f, y)
        rows.append({"case": str(seed), **case_metrics(atoms[:4, None], atoms[4][None], atoms[5:, None], ACDC)})
        for c, name in enumerate(ACDC.names):
            u = (s[:, c] != f[c][None]).double().mean(0).ravel().numpy()
            e = (f[c] != M.majority(y[:, c])).ravel().numpy()
            per_class[name].append((u, e))
            pairs.append((u, e))
    out = U.uncertainty_results(rows, pool, bins=10)
    u, e = (np.concatenate(x) for x in zip(*pairs))
    assert out["reference"] == "majority" and out["pixel"]["pixels"] == 3 * 3 * 36
    assert out["pixel"]["auroc"] == pytest.approx(roc_auc_score(e, u))
    assert out["pixel"]["auprc"] == pytest.approx(average_precision_score(e, u))
    for name, items in per_class.items():
        u, e = (np.concatenate(x) for x in zip(*items))
        assert out["pixel"][f"auroc/{name}"] == pytest.approx(roc_auc_score(e, u))
    scores, risks = [r["case_uncertainty/LV"] for r in rows], [1 - r["dice/LV"] for r in rows]
    assert out["failure"]["aurc/LV"] == pytest.approx(U.failure_detection(scores, risks)["aurc"])
    assert len(out["failure"]["curve"]["risk"]) == 3 and "curve/LV" not in out["failure"]
    assert np.asarray(out["calibration"]["bins"]).shape == (10, 3)
    assert U.uncertainty_results(rows, U.UncertaintyPool(ACDC.names), bins=10) == {}  # no case with members
