"""Finishing an ensemble: per-class relative area, label fusion with or without the members' soft maps, label
entropy and per-class maps; one class (binary, or one class of one value) gives what the binary algorithms give,
bit for bit."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from diffuseg.config import SampleConfig
from diffuseg.inference.finish import Members, finish
from diffuseg.inference.fusion.staple import staple
from diffuseg.inference.fusion.votes import majority_vote, mean_threshold
from diffuseg.inference.postprocess import relative_area_keep, relative_area_members
from diffuseg.inference.uncertainty import uncertainty_map
from diffuseg.labels import label_scheme

ACDC = [{"name": "RV", "values": [1]}, {"name": "Myo", "values": [2]}, {"name": "LV", "values": [3]}]
BRATS = [{"name": "WT", "values": [1, 2, 4]}, {"name": "TC", "values": [1, 4]}, {"name": "ET", "values": [4]}]


def _quadrants() -> torch.Tensor:
    """A 4x4 atom map: quadrants 0 / 1 / 2 / 3."""
    a = torch.zeros(4, 4, dtype=torch.long)
    a[:2, 2:], a[2:, :2], a[2:, 2:] = 1, 2, 3
    return a


def _case(atoms: torch.Tensor, soft: torch.Tensor | None = None, channels: int = 4) -> Members:
    """The drawn ``Members`` of K label maps ``atoms`` (K, H, W); soft defaults to the one-hot of the atoms."""
    if soft is None:
        soft = torch.nn.functional.one_hot(atoms, channels).movedim(-1, 1).float()
    return Members("c", atoms[:, None].float(), soft)


def _cfg(**kw) -> SampleConfig:
    return dataclasses.replace(SampleConfig(), **kw)


@pytest.mark.parametrize("fusion", ["staple", "mean", "vote"])
def test_identical_members_fuse_to_themselves_with_zero_uncertainty(fusion):
    atoms = _quadrants().expand(3, 4, 4).clone()
    result = finish(_case(atoms), _cfg(fusion=fusion), label_scheme(ACDC))
    assert torch.equal(result.fused, _quadrants()[None].float())
    assert result.samples.shape == (3, 1, 4, 4) and result.probability.shape == (4, 4, 4)
    assert torch.equal(result.uncertainty, torch.zeros(1, 4, 4))
    assert result.class_uncertainty.shape == (3, 4, 4) and not result.class_uncertainty.any()


def test_label_entropy_and_class_maps_by_hand():
    """Pixel (0, 0): the 4 members say 0, 1, 2, 3 (entropy log 4 / log 4 = 1); elsewhere two say 1, two say 0
    (normalised entropy log 2 / log 4 = 0.5); RV's member frequency is 1/4 at (0, 0) and 1/2 elsewhere."""
    atoms = torch.zeros(4, 4, 4, dtype=torch.long)
    atoms[:2] = 1
    atoms[:, 0, 0] = torch.tensor([0, 1, 2, 3])
    result = finish(_case(atoms), _cfg(uncertainty="variance"), label_scheme(ACDC))
    expected = torch.full((1, 4, 4), 0.5)
    expected[0, 0, 0] = 1.0
    torch.testing.assert_close(result.uncertainty, expected)
    rv = torch.full((4, 4), 0.25)  # f (1 - f) with f = 1/2
    rv[0, 0] = 0.25 * 0.75
    torch.testing.assert_close(result.class_uncertainty[0], rv)
    entropy = finish(_case(atoms), _cfg(uncertainty="entropy"), label_scheme(ACDC)).class_uncertainty[0, 1, 1]
    assert math.isclose(float(entropy), 1.0, abs_tol=1e-6)  # binary entropy of f = 1/2, in bits
    torch.testing.assert_close(uncertainty_map(atoms[:, None].float(), "variance", label_scheme(ACDC)), expected)


def test_disagreement_by_hand_against_the_fused_label_map():
    """The default kind on the members above, fused by vote: the share of members whose label differs from the
    fused one (2 of 4 where two say 1 and two say 0, whichever wins the tie; 3 of 4 where all four differ), and per
    class the share whose class mask differs from the fused class mask."""
    atoms = torch.zeros(4, 4, 4, dtype=torch.long)
    atoms[:2] = 1
    atoms[:, 0, 0] = torch.tensor([0, 1, 2, 3])
    result = finish(_case(atoms), _cfg(fusion="vote"), label_scheme(ACDC))
    assert SampleConfig().uncertainty == "disagreement"
    fused = result.fused[0].long()
    want = (atoms != fused).float().mean(0)
    torch.testing.assert_close(result.uncertainty[0], want)
    assert float(result.uncertainty[0, 1, 1]) == 0.5 and float(result.uncertainty[0, 0, 0]) == 0.75
    masks, fused_masks = label_scheme(ACDC).class_masks(atoms), label_scheme(ACDC).class_masks(fused)
    torch.testing.assert_close(result.class_uncertainty, (masks != fused_masks).float().mean(0))


def test_mean_fusion_averages_the_members_soft_maps_for_one_value_classes():
    """Every member's label map says RV, but the soft maps lean to LV: ``mean`` follows the soft maps, ``vote``
    the label maps; regions fuse the label maps (their channels are not atoms)."""
    atoms = torch.ones(3, 4, 4, dtype=torch.long)
    soft = torch.zeros(3, 4, 4, 4)
    soft[:, 1], soft[:, 3] = 0.3, 0.7
    scheme = label_scheme(ACDC)
    assert torch.equal(finish(_case(atoms, soft), _cfg(fusion="mean"), scheme).fused, torch.full((1, 4, 4), 3.0))
    assert torch.equal(finish(_case(atoms, soft), _cfg(fusion="vote"), scheme).fused, torch.ones(1, 4, 4))
    regions = label_scheme(BRATS)  # atoms 1, 2, 3 = label values 1, 2, 4; C = 3 channels
    fused = finish(_case(atoms, torch.rand(3, 3, 4, 4)), _cfg(fusion="mean"), regions).fused
    assert torch.equal(fused, torch.ones(1, 4, 4))


def test_relative_area_per_class_drops_small_classes_to_background():
    """Member 1's LV covers 1 pixel, member 0's 4: with tau = 0.5 member 1 loses its LV (to background, soft
    mass moved to channel 0), keeps RV and Myo; member 0 is unchanged."""
    scheme = label_scheme(ACDC)
    a0 = _quadrants()
    a1 = _quadrants()
    a1[2:, 2:] = 0
    a1[3, 3] = 3
    atoms = torch.stack([a0, a1])
    soft = torch.nn.functional.one_hot(atoms, 4).movedim(-1, 1).float()
    out, kept_soft, masks = relative_area_members(atoms, soft, scheme, 0.5)
    assert torch.equal(out[0], a0)
    expected = a1.clone()
    expected[3, 3] = 0
    assert torch.equal(out[1], expected)
    torch.testing.assert_close(kept_soft.sum(1), torch.ones(2, 4, 4))  # still a distribution per pixel
    assert float(kept_soft[1, 3, 3, 3]) == 0.0 and float(kept_soft[1, 0, 3, 3]) == 1.0
    assert torch.equal(masks, scheme.class_masks(out))
    fused = finish(_case(atoms), _cfg(fusion="vote", relative_area=0.5), scheme)
    assert torch.equal(fused.samples[:, 0].long(), out)


@pytest.mark.parametrize("fusion", ["staple", "mean", "vote"])
@pytest.mark.parametrize("tau", [0.0, 0.5])
def test_a_binary_scheme_takes_todays_path_bit_for_bit(fusion, tau):
    g = torch.Generator().manual_seed(0)
    soft = torch.rand(5, 1, 8, 8, generator=g)
    masks = (soft > 0.5).float()
    cfg = _cfg(fusion=fusion, relative_area=tau)
    for scheme in (label_scheme(), label_scheme([{"name": "tumour", "values": [1]}])):
        new = finish(Members("c", masks, soft), cfg, scheme)
        old = finish(Members("c", masks, soft), cfg)
        for name in ("samples", "soft", "fused", "probability", "uncertainty"):
            assert torch.equal(getattr(new, name), getattr(old, name)), name
        assert new.class_uncertainty is None


def _binary_reference(masks: torch.Tensor, soft: torch.Tensor, cfg: SampleConfig) -> dict[str, torch.Tensor]:
    """The one-class finishing written out with the binary algorithms alone: each member kept or emptied (masks
    and soft) by its area, the binary fusion of the foreground channel, the member-frequency uncertainty."""
    if cfg.relative_area > 0:
        keep = relative_area_keep(masks, cfg.relative_area).float().view(-1, 1, 1, 1)
        masks, soft = masks * keep, soft * keep
    votes, probabilities = masks[None, :, 0], soft[None, :, 0]
    if cfg.fusion == "staple":
        result = staple(votes)
        fused, probability = result.mask(cfg.threshold).float(), result.probability.float()
    elif cfg.fusion == "mean":
        fused, probability = mean_threshold(probabilities, cfg.threshold)
    else:
        fused, probability = majority_vote(votes)
    f = (masks > 0.5).float().mean(0)
    g = 1.0 - f
    if cfg.uncertainty == "disagreement":
        uncertainty = ((masks > 0.5) != (fused > 0.5)).float().mean(0)
    elif cfg.uncertainty == "variance":
        uncertainty = f * g
    else:
        uncertainty = -(torch.xlogy(f, f) + torch.xlogy(g, g)) / math.log(2)
    return {"samples": masks, "soft": soft, "fused": fused, "probability": probability, "uncertainty": uncertainty}


@settings(max_examples=120, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    k=st.integers(1, 7),
    h=st.integers(1, 9),
    w=st.integers(1, 9),
    fusion=st.sampled_from(["staple", "mean", "vote"]),
    tau=st.sampled_from([0.0, 0.25, 0.5, 1.0]),
    threshold=st.sampled_from([0.3, 0.5, 0.7]),
    kind=st.sampled_from(["disagreement", "variance", "entropy"]),
    one_class=st.booleans(),
)
def test_one_class_finishing_is_the_binary_algorithms_bit_for_bit(
    seed, k, h, w, fusion, tau, threshold, kind, one_class
):
    """Random members (each of its own density, soft maps on a 0.1 grid so that ties with the threshold occur):
    ``finish`` of a binary scheme, or of one class of one value, equals ``_binary_reference`` in every output."""
    g = torch.Generator().manual_seed(seed)
    soft = (torch.rand(k, 1, h, w, generator=g) * 10).round() / 10
    masks = (torch.rand(k, 1, h, w, generator=g) < torch.rand(k, 1, 1, 1, generator=g)).float()
    cfg = _cfg(fusion=fusion, relative_area=tau, threshold=threshold, uncertainty=kind)
    scheme = label_scheme([{"name": "tumour", "values": [1]}]) if one_class else label_scheme()
    got = finish(Members("c", masks, soft), cfg, scheme)
    for name, want in _binary_reference(masks, soft, cfg).items():
        assert torch.equal(getattr(got, name), want), name
    assert got.class_uncertainty is None
