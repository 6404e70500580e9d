"""Test-time augmentation: the 8 symmetries of the square and their inverses, and members drawn under them
(``sample.tta``) through the one ensemble path, alone or with an ensemble of draws."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from diffuseg import methods
from diffuseg.inference.ensemble import draw_members, member_view, sample_ensembles, views
from diffuseg.inference.tta import TRANSFORMS, dihedral, undo
from diffuseg.methods import class_probabilities, make_draw
from symmetries import SYMMETRIES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
from classfamilies import ACDC, SIZE, make_config

IMAGE = torch.arange(16.0).reshape(1, 4, 4)  # no two symmetries give the same image


def test_the_eight_transforms_are_the_symmetries_of_the_square_and_undo_inverts_them():
    seen = {tuple(dihedral(IMAGE, t).flatten().tolist()) for t in range(TRANSFORMS)}
    expected = {tuple(f(IMAGE).flatten().tolist()) for f in (lambda x: x, *SYMMETRIES)}
    assert len(seen) == 8 and seen == expected
    assert torch.equal(dihedral(IMAGE, 0), IMAGE)
    for t in range(TRANSFORMS):
        assert torch.equal(undo(dihedral(IMAGE, t), t), IMAGE)
        assert torch.equal(dihedral(undo(IMAGE, t), t), IMAGE)


def test_the_first_four_are_the_flips_and_need_no_square():
    wide = torch.arange(6.0).reshape(1, 2, 3)
    assert torch.equal(dihedral(wide, 1), wide.flip(-1)) and torch.equal(dihedral(wide, 2), wide.flip(-2))
    assert torch.equal(dihedral(wide, 3), torch.rot90(wide, 2, (-2, -1)))
    with pytest.raises(ValueError, match="square"):
        dihedral(wide, 4)
    with pytest.raises(ValueError, match=r"expected 0 \.\. 7"):
        dihedral(IMAGE, 8)


def test_member_views_cycle_through_draws_then_transforms():
    assert [member_view(k, 1, True) for k in range(10)] == [(0, t % 8) for t in range(10)]
    assert [member_view(k, 3, False) for k in range(4)] == [(0, 0), (1, 0), (2, 0), (0, 0)]
    pairs = [member_view(k, 3, True) for k in range(views(3, True))]
    assert len(set(pairs)) == 24 and views(3, False) == 3 and views(1, True) == 8


def _unet(seed: int, classes=()):
    torch.manual_seed(seed)
    config = make_config("unet", classes)
    return config, methods.build_network(config).eval()


def _cases(n: int = 3) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(5)
    return [(f"c{i}", torch.randn(1, SIZE, SIZE, generator=g)) for i in range(n)]


@pytest.mark.parametrize("classes", [(), ACDC], ids=["binary", "classes"])
def test_tta_members_are_the_hand_transformed_predictions_of_the_net(classes):
    config, net = _unet(0, classes)
    cfg = dataclasses.replace(config.sample, tta=True, samples=10, batch_size=4)  # K = 10: transforms 0..7, 0, 1
    draw = make_draw(config, net, None)
    scheme = config.data.scheme
    for (cid, image), members in zip(_cases(), draw_members(draw, _cases(), cfg)):
        assert members.case_id == cid and members.soft.shape == (10, scheme.channels, SIZE, SIZE)
        for k in range(10):
            t = k % 8
            with torch.inference_mode():
                hand = undo(class_probabilities(net(dihedral(image[None], t)), scheme), t)[0]
            torch.testing.assert_close(members.soft[k], hand, rtol=1e-5, atol=1e-6)
        assert torch.equal(members.soft[8], members.soft[0]) and torch.equal(members.soft[9], members.soft[1])
        decoded = scheme.decode(members.soft, cfg.threshold).unsqueeze(1).float()
        assert torch.equal(members.masks, decoded)
    assert not torch.equal(members.soft[0], members.soft[1])  # a generic net is not flip-equivariant


@pytest.mark.usefixtures("one_thread")
def test_tta_members_do_not_depend_on_the_batch_size():
    config, net = _unet(0)
    draw = make_draw(config, net, None)
    drawn = {
        batch: list(
            draw_members(draw, _cases(), dataclasses.replace(config.sample, tta=True, samples=8, batch_size=batch))
        )
        for batch in (1, 3, 8, 24)
    }
    for batch in (3, 8, 24):
        for a, b in zip(drawn[1], drawn[batch]):
            torch.testing.assert_close(a.soft, b.soft, rtol=1e-5, atol=1e-6)
            assert torch.equal(a.masks, b.masks)


class PixelNet(torch.nn.Module):
    """A net whose output at a pixel is a function of that pixel's value alone: it commutes with every
    symmetry of the square."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return 4 * image - 1


def test_tta_of_an_equivariant_net_gives_zero_disagreement():
    config, _ = _unet(0)
    cfg = dataclasses.replace(config.sample, tta=True, samples=8, batch_size=8, fusion="mean")
    draw = make_draw(config, PixelNet(), None)
    for result in sample_ensembles(draw, _cases(), cfg):
        assert result.samples.shape[0] == 8 and result.samples.any() and not result.samples.all()
        assert torch.equal(result.samples, result.samples[:1].expand_as(result.samples))
        assert float(result.uncertainty.abs().max()) == 0.0


def test_an_ensemble_of_draws_takes_member_k_from_draw_k_mod_n():
    (config, a), (_, b) = _unet(0), _unet(1)
    draws = [make_draw(config, a, None), make_draw(config, b, None)]
    for tta in (False, True):
        cfg = dataclasses.replace(config.sample, tta=tta, samples=5, batch_size=3)
        for (_, image), members in zip(_cases(), draw_members(draws, _cases(), cfg)):
            for k in range(5):
                net, t = (a, b)[k % 2], (k // 2) % 8 if tta else 0
                with torch.inference_mode():
                    hand = undo(torch.sigmoid(net(dihedral(image[None], t))), t)[0]
                torch.testing.assert_close(members.soft[k], hand, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(members.soft[0], members.soft[1])
