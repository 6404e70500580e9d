"""``case_metrics``: one case's members and fused mask against its annotators, binary as the one-class case."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffuseg.config import EvalConfig
from diffuseg.evaluation import metrics as M
from diffuseg.evaluation.case_metrics import _mask_metrics, add_calibration, calibration_sums, case_metrics
from diffuseg.labels import LabelScheme, label_scheme

CFG = EvalConfig(ged_samples=(2, 4), hd95_percentile=90.0, calibration_bins=5)
ONE_CLASS = label_scheme([{"name": "lesion", "values": [1]}])


def _same(a: dict, b: dict) -> bool:
    """Equal keys in the same order and equal values, NaN equal to NaN."""
    return list(a) == list(b) and all(
        (isinstance(x, float) and math.isnan(x) and math.isnan(y)) or x == y for x, y in zip(a.values(), b.values())
    )


def _case(seed: int, members: int, annotators: int, shape: tuple[int, ...]):
    g = torch.Generator().manual_seed(seed)
    atoms = torch.rand(1 + annotators + members, *shape, generator=g) > torch.rand(1, *[1] * len(shape), generator=g)
    atoms = atoms.to(torch.uint8)
    if seed % 3 == 0:
        atoms[0] = 0  # an empty fused mask: the empty-mask policy must agree too
    return atoms[0], atoms[1 : 1 + annotators], atoms[1 + annotators :] if members else None


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(0, 6), st.integers(1, 4), st.sampled_from([(5, 6), (4, 5, 3)]))
def test_binary_is_the_one_class_case_exactly(seed, members, annotators, shape):
    """The one path with the binary scheme, and with one declared class, gives the binary metrics of the masks
    (the kernel every class is scored with) and the binary calibration sums, bit for bit."""
    fused, annotations, samples = _case(seed, members, annotators, shape)
    spacing = (0.5, 2.0, 1.5)[: len(shape)]
    as_members = None if samples is None else samples[:, None]
    want = _mask_metrics(fused.bool(), annotations.bool(), None if samples is None else samples.bool(), spacing, CFG)
    for scheme in (LabelScheme(), ONE_CLASS):
        got = case_metrics(as_members, fused[None], annotations[:, None], scheme, CFG, spacing)
        assert _same(got, want), (scheme, got, want)
    if samples is not None:
        sums = calibration_sums(LabelScheme(), CFG.calibration_bins)
        add_calibration(sums, LabelScheme(), samples, annotations, CFG.calibration_bins)
        p, q = samples.bool().double().mean(0), annotations.bool().double().mean(0)
        assert list(sums) == ["all"]
        assert torch.equal(sums["all"], M.calibration_bins(p, q, CFG.calibration_bins))


def test_members_as_an_ensemble_returns_them():
    """float32 atom maps (K, 1, H, W), as ``inference.ensemble`` returns members, score as uint8 ones do."""
    fused, annotations, samples = _case(7, 4, 2, (6, 6))
    scheme = LabelScheme()
    want = case_metrics(samples[:, None], fused[None], annotations[:, None], scheme)
    got = case_metrics(samples[:, None].float(), fused[None].float(), annotations[:, None], scheme)
    assert _same(got, want) and got["samples"] == 4 and "ged_4" in got


def test_three_classes_by_hand():
    fused = torch.tensor([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 0, 2, 3]])
    truth = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [0, 0, 2, 2], [0, 3, 3, 3]])
    scheme = label_scheme([{"name": n, "values": [v]} for n, v in (("RV", 1), ("Myo", 2), ("LV", 3))])
    row = case_metrics(None, fused[None], truth[None, None], scheme)
    assert [row[f"dice/{n}"] for n in scheme.names] == pytest.approx([8 / 9, 4 / 5, 1 / 2])
    assert row["dice"] == pytest.approx((8 / 9 + 4 / 5 + 1 / 2) / 3)
    assert "ged" not in row and "samples" not in row


def test_rejects_shapes_without_the_channel_axis():
    with pytest.raises(ValueError, match=r"fused \(1, \*S\)"):
        case_metrics(None, torch.zeros(4, 4), torch.zeros(2, 1, 4, 4), LabelScheme())
    with pytest.raises(ValueError, match="members"):
        case_metrics(torch.zeros(3, 4, 4), torch.zeros(1, 4, 4), torch.zeros(2, 1, 4, 4), LabelScheme())
