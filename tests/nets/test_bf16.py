"""Networks sampled in bf16 end to end (``nets.bf16``): close to autocast, no casts between layers."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from diffuseg.config import SampleConfig
from diffuseg.inference.ensemble import prepare_network
from diffuseg.nets.bf16 import Bf16Network
from diffuseg.nets.registry import build_network

SMALL = {
    "medsegdiff-b": {"base_channels": 8},
    "diffusion-unet": {"channels": (8, 16, 16, 16)},
    "unet": {"channels": (8, 16, 16, 16)},
}


class Casts(TorchDispatchMode):
    """Counts the floating-point dtype conversions of the operators it sees."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket)
        source = args[1] if name == "aten.copy_" else args[0] if args else None
        cast = name in ("aten.to", "aten._to_copy", "aten.copy_") and isinstance(source, torch.Tensor)
        if cast and isinstance(out, torch.Tensor) and out.is_floating_point() and out.dtype != source.dtype:
            self.count += 1
        return out


def inputs(name: str, rows: int = 2, size: int = 32) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(1, 1, size, size, generator=gen)
    if name == "unet":
        return (image,)
    return torch.randn(rows, 1, size, size, generator=gen), torch.rand(rows, generator=gen), image


def network(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network(name, 1, **SMALL[name]).eval()
    for p in net.parameters():  # away from the zero-initialised heads, so outputs differ between inputs
        p.data.add_(0.05 * torch.randn_like(p))
    return net


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bf16_network_matches_autocast(name: str) -> None:
    net, args = network(name), inputs(name)
    with torch.inference_mode():
        reference = net(*args)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = net(*args).float()
        bf16 = Bf16Network(net)(*args)
    assert bf16.dtype == torch.float32 and bf16.shape == reference.shape
    scale = reference.abs().max()
    assert (autocast - reference).abs().max() < 0.1 * scale  # bf16's own error, for the yardstick
    assert (bf16 - reference).abs().max() < 0.1 * scale
    assert next(Bf16Network(net).parameters()).dtype == torch.bfloat16
    assert next(net.parameters()).dtype == torch.float32  # the copy leaves the original alone


@pytest.mark.parametrize("name", sorted(SMALL))
def test_bf16_network_casts_only_its_inputs_output_and_fft(name: str) -> None:
    """Under autocast every convolution casts; in a bf16 network only the inputs, the output, the time embedding
    and each FF-Parser (to float32 and back) do."""
    net, args = network(name), inputs(name)
    ff_parsers = sum(type(m).__name__ == "FFParser" for m in net.modules())
    with torch.inference_mode():
        with Casts() as autocast, torch.autocast("cpu", dtype=torch.bfloat16):
            net(*args)
        wrapped = Bf16Network(net)
        with Casts() as bf16:
            wrapped(*args)
    assert bf16.count <= 4 + 2 * ff_parsers
    assert autocast.count > 3 * bf16.count


def test_ff_parser_filters_keep_their_float32_weights() -> None:
    net = network("medsegdiff-b")
    pairs = list(zip(Bf16Network(net).net.skip_filters, net.skip_filters))
    assert pairs and all(torch.equal(a.weight_real, b.weight_real) for a, b in pairs)
    assert all(a.weight_imag.dtype == torch.float32 for a, _ in pairs)


def test_in_place_silus_leave_the_shared_time_embedding_alone() -> None:
    net, args = network("medsegdiff-b"), inputs("medsegdiff-b")
    wrapped = Bf16Network(net)
    assert any(getattr(m, "inplace", False) for m in wrapped.modules())
    plain = Bf16Network(net)
    for m in plain.modules():
        if isinstance(m, torch.nn.SiLU):
            m.inplace = False
    with torch.inference_mode():
        assert torch.equal(wrapped(*args), plain(*args))


def test_channels_last_bf16_stays_so_through_the_ff_parser() -> None:
    net = network("medsegdiff-b").to(memory_format=torch.channels_last)
    parser = net.skip_filters[0]
    x = torch.randn(2, parser.weight_real.shape[0], 32, 32).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        out = parser(x.bfloat16())
        reference = parser(x.contiguous())
    assert out.dtype == torch.bfloat16 and out.is_contiguous(memory_format=torch.channels_last)
    assert (out.float() - reference).abs().max() < 0.02 * reference.abs().max()


@pytest.mark.parametrize(("precision", "wrapped"), [("bf16", True), ("32", False)])
def test_prepare_network_samples_whole_networks_in_bf16(precision: str, wrapped: bool) -> None:
    net = prepare_network(network("medsegdiff-b"), SampleConfig(precision=precision), "cpu")
    assert isinstance(net, Bf16Network) is wrapped


def test_latent_networks_keep_autocast() -> None:
    net = build_network("probunet", 1)
    assert not isinstance(prepare_network(net, SampleConfig(precision="bf16"), "cpu"), Bf16Network)
