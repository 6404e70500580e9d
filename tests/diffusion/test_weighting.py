"""Loss weightings w(lambda) against their formulas, and the time samplers."""

from __future__ import annotations

import math

import pytest
import torch

from diffuseg.diffusion.weighting import sample_uniform_times, weight
from diffuseg.enums import TimeSampler, Weighting

LAMS = [-6.0, -1.0, 0.0, 0.5, 4.0]


def sig(x):
    return 1 / (1 + math.exp(-x))


@pytest.mark.parametrize(
    "kind,formula",
    [
        (Weighting.SNR, lambda l, b: math.exp(l)),
        (Weighting.TRUNCATED_SNR, lambda l, b: max(math.exp(l), 1.0)),
        (Weighting.SNR_PLUS_ONE, lambda l, b: math.exp(l) + 1),
        (Weighting.UNIFORM, lambda l, b: 1.0),
        (Weighting.SIGMOID, lambda l, b: math.exp(l) * sig(b - l)),
    ],
)
@pytest.mark.parametrize("bias", [-3.0, 2.0])
def test_weights_equal_their_formulas(kind, formula, bias):
    got = weight(kind, torch.tensor(LAMS, dtype=torch.float64), bias)
    want = torch.tensor([formula(lam, bias) for lam in LAMS], dtype=torch.float64)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=0)


def test_sigmoid_tends_to_snr_for_large_bias():
    lam = torch.tensor(LAMS, dtype=torch.float64)
    torch.testing.assert_close(weight(Weighting.SIGMOID, lam, 60.0), weight(Weighting.SNR, lam), rtol=1e-9, atol=0)


def test_low_discrepancy_times_are_stratified():
    u = sample_uniform_times(8, torch.Generator().manual_seed(0), TimeSampler.LOW_DISCREPANCY)
    assert sorted((u * 8).floor().long().tolist()) == list(range(8))
