"""FF-Parser (MedSegDiff eqs. 4-6): identity at initialisation, the filter acts on the spectrum as set,
and the stored map keeps its meaning (a function of normalised frequency) at any feature size."""

from __future__ import annotations

import pytest
import torch

from diffuseg.nets.ffparser import FFParser


@pytest.mark.parametrize("size", [(16, 16), (8, 8), (32, 32), (7, 9), (20, 12), (1, 1), (3, 64)])
def test_identity_at_init_any_size(size: tuple[int, int]) -> None:
    layer = FFParser(4, (16, 16))
    x = torch.randn(2, 4, *size)
    assert torch.allclose(layer(x), x, atol=1e-5)


def test_filter_multiplies_the_spectrum_as_set() -> None:
    torch.manual_seed(0)
    layer = FFParser(3, (8, 8))
    with torch.no_grad():
        layer.weight_real.normal_()
        layer.weight_imag.normal_()
    x = torch.randn(2, 3, 8, 8)
    a = torch.complex(layer.weight_real, layer.weight_imag)
    expected = torch.fft.irfft2(torch.fft.rfft2(x, norm="ortho") * a, s=(8, 8), norm="ortho")  # eqs. 4-6
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_dc_only_filter_returns_channel_means() -> None:
    layer = FFParser(2, (8, 8))
    with torch.no_grad():
        layer.weight_real.zero_()
        layer.weight_real[:, 0, 0] = 1.0
    x = torch.randn(3, 2, 8, 8)
    assert torch.allclose(layer(x), x.mean(dim=(2, 3), keepdim=True).expand_as(x), atol=1e-5)


def test_zeroed_frequency_is_removed_from_the_output_spectrum() -> None:
    layer = FFParser(1, (16, 16))
    with torch.no_grad():
        layer.weight_real[0, 3, 2] = 0.0
    spectrum = torch.fft.rfft2(layer(torch.randn(4, 1, 16, 16)), norm="ortho")
    assert spectrum[:, 0, 3, 2].abs().max() < 1e-5
    assert spectrum[:, 0, 4, 2].abs().min() > 0


def test_resampled_filter_is_a_function_of_normalised_frequency() -> None:
    # Store A(fy, fx) = 1 + 2 fx + 4 |fy| - linear pieces on the grid, so bilinear sampling reproduces it exactly
    # at the frequencies of any even feature size.
    layer = FFParser(1, (16, 16))
    fy = torch.fft.fftfreq(16)  # FFT order, cycles per pixel
    fx = torch.fft.rfftfreq(16)
    with torch.no_grad():
        layer.weight_real[0] = 1 + 2 * fx[None, :] + 4 * fy.abs()[:, None]
        layer.weight_imag[0] = fx[None, :].expand(16, -1)
    for h, w in [(8, 8), (32, 32), (8, 24), (12, 20), (7, 9), (33, 17)]:
        a = layer.filter(h, w)[0]
        fy_a, fx_a = torch.fft.fftfreq(h), torch.fft.rfftfreq(w)
        expected_real = 1 + 2 * fx_a[None, :] + 4 * fy_a.abs()[:, None]
        # rows above the highest stored positive frequency (7/16) interpolate towards the Nyquist row (-0.5 = +0.5)
        assert torch.allclose(a.real, expected_real, atol=1e-5), (h, w)
        assert torch.allclose(a.imag, fx_a[None, :].expand(h, -1), atol=1e-5), (h, w)


def test_gradients_reach_the_filter_at_another_size() -> None:
    layer = FFParser(2, (8, 8))
    layer(torch.randn(1, 2, 20, 12)).square().sum().backward()
    assert layer.weight_real.grad.abs().sum() > 0 and layer.weight_imag.grad.abs().sum() > 0


def test_bf16_and_channels_last() -> None:
    layer = FFParser(4, (8, 8))
    x = torch.randn(2, 4, 8, 8).contiguous(memory_format=torch.channels_last)
    assert torch.allclose(layer(x), x, atol=1e-5)
    out = layer(x.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == x.shape


def test_filter_reused_without_autograd_follows_weight_updates() -> None:
    layer = FFParser(2, (8, 8))
    x = torch.randn(1, 2, 12, 12)
    with torch.no_grad():
        assert layer.filter(12, 12) is layer.filter(12, 12)  # kept between sampling steps
        assert torch.allclose(layer(x), x, atol=1e-5)
        layer.weight_real.zero_()  # an in-place update (optimiser, EMA, load_state_dict) invalidates it
        assert layer(x).abs().max() < 1e-6
    layer.load_state_dict({"weight_real": torch.ones(2, 8, 5), "weight_imag": torch.zeros(2, 8, 5)})
    with torch.no_grad():
        assert torch.allclose(layer(x), x, atol=1e-5)
