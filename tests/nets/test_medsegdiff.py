"""MedSegDiff: shapes, gradients, eq. 3 by hand, the ablation switches, determinism and member sharing, and the
corners treated alike with centred downsampling and partial padding.

Tiny widths (``base_channels=8``) keep every test fast; the default widths are only built to count them.
"""

from __future__ import annotations

import pytest
import torch

from diffuseg.nets.ffparser import FFParser
from diffuseg.nets.medsegdiff import AttentiveFusion, MedSegDiff, medsegdiff
from symmetries import TRANSFORMS, relative_error, symmetrise


def _tiny(variant: str = "s", in_channels: int = 1, seed: int = 0, **options) -> MedSegDiff:
    torch.manual_seed(seed)
    return medsegdiff(variant, in_channels, base_channels=8, **options)


def _inputs(batch: int, members: int, channels: int, size: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, channels, size, size, generator=g)
    x_t = torch.randn(batch * members, 1, size, size, generator=g)
    t = torch.rand(batch, generator=g).repeat_interleave(members)  # members of an image share t
    return x_t, t, image


def _params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


@pytest.mark.parametrize(
    ("variant", "size", "channels"),
    [("s", 16, 1), ("s", 48, 3), ("s", 64, 4), ("b", 32, 1), ("b", 64, 3), ("l", 64, 4), ("l", 128, 1)],
)
def test_output_shape(variant: str, size: int, channels: int) -> None:
    net = _tiny(variant, channels)
    x_t, t, image = _inputs(2, 1, channels, size)
    with torch.no_grad():
        out = net(x_t, t, image)
    assert out.shape == (2, 1, size, size) and torch.isfinite(out).all()


@pytest.mark.parametrize(("variant", "size"), [("s", 320), ("b", 256)])
def test_output_shape_large_inputs(variant: str, size: int) -> None:
    torch.manual_seed(0)
    net = medsegdiff(variant, 3, base_channels=4)
    x_t, t, image = _inputs(1, 2, 3, size)
    with torch.no_grad():
        assert net(x_t, t, image).shape == (2, 1, size, size)


def test_downsampling_per_variant() -> None:
    assert [_tiny(v).downsampling for v in "sbl"] == [16, 32, 64]  # 4x, 5x, 6x downsampling (section 3.2)


def test_default_widths_approach_table3() -> None:
    counts = [_params(medsegdiff(v, 1)) for v in "sbl"]
    for count, paper in zip(counts, (13e6, 25e6, 41e6)):
        assert abs(count - paper) / paper < 0.05, counts


def test_gradients_reach_every_parameter() -> None:
    net = _tiny("s")
    x_t, t, image = _inputs(1, 2, 1, 32)  # 4 x 4 at the deepest skip: some frequencies are not self-conjugate
    net(x_t, t, image).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing


def test_attentive_fusion_is_eq3_by_hand() -> None:
    m_i = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, -1.0], [2.0, 5.0]]]])  # (1, 2, 2, 2)
    m_x = torch.tensor([[[[0.5, 0.0], [-1.0, 2.0]], [[3.0, 1.0], [1.0, -2.0]]]])

    def layer_norm(m: torch.Tensor) -> torch.Tensor:  # over the whole (C, H, W) feature, eps 1e-5
        return (m - m.mean()) / torch.sqrt(m.var(unbiased=False) + 1e-5)

    expected = layer_norm(m_i) * layer_norm(m_x) * m_i
    assert torch.allclose(AttentiveFusion(2)(m_i, m_x), expected, atol=1e-6)


def test_fusion_at_the_middle_two_stages() -> None:
    assert _tiny("s").fusion_stages == (2, 3)  # stages of 4 and 6 blocks, ResNet34's middle two
    assert _tiny("l").fusion_stages == (3, 4)
    assert _tiny("s", dynamic_conditioning=False).fusion_stages == ()


def test_ablation_switches_remove_parts() -> None:
    base = _tiny(dynamic_conditioning=False, ff_parser=False)
    dycond = _tiny(dynamic_conditioning=True, ff_parser=False)
    full = _tiny(dynamic_conditioning=True, ff_parser=True)
    assert _params(base) < _params(dycond) < _params(full)
    assert not any(isinstance(m, FFParser) for m in dycond.modules())
    assert len(base.fusion) == 0 and len(full.fusion) == 2

    # Same weights where they exist: Dy-Cond changes the output; FF-Parser starts as the identity, so it
    # changes the output only once its filter differs from 1.
    dycond.load_state_dict(base.state_dict(), strict=False)
    full.load_state_dict(dycond.state_dict(), strict=False)
    x_t, t, image = _inputs(2, 1, 1, 16)
    with torch.no_grad():
        out_base, out_dycond, out_full = base(x_t, t, image), dycond(x_t, t, image), full(x_t, t, image)
        assert not torch.allclose(out_base, out_dycond, atol=1e-4)
        assert torch.allclose(out_dycond, out_full, atol=1e-5)
        for f in full.skip_filters:
            f.weight_real.mul_(0.5)
        assert not torch.allclose(full(x_t, t, image), out_dycond, atol=1e-4)


def test_deterministic_given_weights_and_no_modules_built_in_forward() -> None:
    x_t, t, image = _inputs(2, 2, 3, 16)
    a, b = _tiny("s", 3, seed=5), _tiny("s", 3, seed=5)
    keys = list(a.state_dict())
    modules = len(list(a.modules()))
    with torch.no_grad():
        first = a(x_t, t, image)
        assert torch.equal(first, a(x_t, t, image))
        assert torch.equal(first, b(x_t, t, image))
    assert list(a.state_dict()) == keys and len(list(a.modules())) == modules


@pytest.mark.parametrize("dynamic_conditioning", [True, False])
def test_members_share_image_work_and_match_repeated_images(dynamic_conditioning: bool) -> None:
    net = _tiny("s", 3, dynamic_conditioning=dynamic_conditioning)
    x_t, t, image = _inputs(2, 4, 3, 16)
    seen: list[int] = []
    hook = net.image_encoder[0].register_forward_hook(lambda m, i, o: seen.append(o.shape[0]))
    with torch.no_grad():
        shared = net(x_t, t, image)
        repeated = net(x_t, t, image.repeat_interleave(4, dim=0))
    hook.remove()
    assert seen == [2, 8]  # once per image with K = 4 members, once per row when the image is repeated
    assert torch.allclose(shared, repeated, atol=1e-5)


@pytest.mark.parametrize(
    ("dynamic_conditioning", "images", "members", "micro_batch", "parts"),
    [
        (True, 2, 4, 1, [1] * 8),
        (True, 2, 4, 3, [3, 1, 3, 1]),  # each image's members in groups of 3
        (False, 2, 4, 2, [2, 2, 2, 2]),
        (True, 4, 1, 2, [2, 2]),  # one member per image (a call of mixed cases): whole images per part
        (True, 3, 2, 5, [4, 2]),  # 5 rows fit two images of 2 members
    ],
)
def test_micro_batches_match_one_pass_and_still_share_image_work(
    dynamic_conditioning: bool, images: int, members: int, micro_batch: int, parts: list[int]
) -> None:
    net = _tiny("s", 3, dynamic_conditioning=dynamic_conditioning).eval()
    x_t, t, image = _inputs(images, members, 3, 32)
    image_rows: list[int] = []
    mask_rows: list[int] = []
    hooks = [
        net.image_encoder[0].register_forward_hook(lambda m, i, o: image_rows.append(o.shape[0])),
        net.mask_encoder[0].register_forward_hook(lambda m, i, o: mask_rows.append(o.shape[0])),
    ]
    with torch.no_grad():
        whole = net(x_t, t, image)
        net.micro_batch = micro_batch
        split = net(x_t, t, image)
    for hook in hooks:
        hook.remove()
    assert image_rows == [images, images]  # the image stages run once per image either way
    assert mask_rows == [images * members, *parts]
    torch.testing.assert_close(split, whole, rtol=1e-5, atol=1e-5)


def test_rows_must_be_a_multiple_of_images() -> None:
    x_t, t, image = _inputs(2, 2, 1, 16)
    with pytest.raises(ValueError, match="multiple"):
        _tiny()(x_t[:3], t[:3], image)


def test_channels_last_bf16_autocast() -> None:
    net = _tiny("s").to(memory_format=torch.channels_last)
    x_t, t, image = _inputs(2, 2, 1, 32)
    with torch.no_grad():
        ref = net(x_t, t, image)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x_t.contiguous(memory_format=torch.channels_last), t, image)
    assert out.shape == ref.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().mean() < 0.1 * ref.abs().mean() + 1e-2


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
def test_medsegdiff_with_centred_downsampling_and_partial_padding_treats_corners_alike(name):
    torch.manual_seed(0)
    tf = TRANSFORMS[name]
    options = {"downsample": "centred", "padding": "partial"}  # FF-Parser as initialised: the identity
    net = symmetrise(MedSegDiff(1, [1, 1, 1, 1], [8, 8, 16, 16], decoder_blocks=1, **options)).eval()
    image, x_t, t = torch.rand(2, 1, 32, 32), torch.randn(4, 1, 32, 32), torch.tensor([0.3, 0.3, 0.8, 0.8])
    with torch.no_grad():
        assert relative_error(net(tf(x_t), t, tf(image)), tf(net(x_t, t, image))) < 1e-4
        if name != "transpose":  # the strided conv treats a transpose alike, not the flips
            paper = symmetrise(MedSegDiff(1, [1, 1, 1, 1], [8, 8, 16, 16], decoder_blocks=1)).eval()
            assert relative_error(paper(tf(x_t), t, tf(image)), tf(paper(x_t, t, image))) > 0.1
