"""Network registry: an explicit name -> constructor table, and ``describe`` for ``diffuseg info``.

A constructor is called as ``constructor(in_channels, out_channels=C, [mask_channels=...,] **options)``; the
options it accepts are its keyword parameters, so an unknown option is reported with the allowed ones before
anything is built. The channel counts (``STRUCTURAL``) come from the data (image channels, the label scheme's
``LabelScheme.channels``), never from ``model.options``; ``mask_channels`` (the channels of x_t) is passed to
the constructors that take one, the diffusion networks. To add a network, add one line to ``NETWORKS`` (and, if
the paper reports one, its parameter count to ``PAPER_PARAMS``).
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from diffuseg.errors import UserError
from diffuseg.nets.medsegdiff import medsegdiff
from diffuseg.nets.medsegdiff_segmenter import medsegdiff_segmenter
from diffuseg.nets.phiseg import PHiSeg
from diffuseg.nets.probunet import ProbUNet, ProbUNetDiffusionNet
from diffuseg.nets.unet import CHANNELS, MIDDLE_BLOCKS, NUM_RES_BLOCKS, TIME_DIM, DiffusionUNet, SegmentationUNet


def diffusion_unet(
    in_channels: int,
    channels: Sequence[int] = CHANNELS,
    num_res_blocks: Sequence[int] = NUM_RES_BLOCKS,
    middle_blocks: int = MIDDLE_BLOCKS,
    time_dim: int = TIME_DIM,
    downsample: str = "conv",
    padding: str = "zeros",
    mask_channels: int = 1,
    out_channels: int = 1,
) -> DiffusionUNet:
    """The ambiguity paper's diffusion UNet (image concatenated with x_t), ``unet.DiffusionUNet``.

    Args:
        in_channels: image channels.
        channels: width of each level.
        num_res_blocks: residual blocks of each level.
        middle_blocks: residual blocks at the lowest resolution.
        time_dim: width of the time embedding.
        downsample: conv | centred (``DownsampleKind``).
        padding: zeros | partial (``Padding``).
        mask_channels: channels of x_t (``LabelScheme.channels``; twice that with self-conditioning).
        out_channels: channels of the prediction (``LabelScheme.channels``).
    """
    return DiffusionUNet(
        in_channels,
        mask_channels=mask_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        num_res_blocks=tuple(num_res_blocks),
        middle_blocks=middle_blocks,
        time_dim=time_dim,
        downsample=downsample,
        padding=padding,
    )


def segmentation_unet(
    in_channels: int,
    channels: Sequence[int] = CHANNELS,
    num_res_blocks: Sequence[int] = NUM_RES_BLOCKS,
    middle_blocks: int = MIDDLE_BLOCKS,
    downsample: str = "conv",
    padding: str = "zeros",
    out_channels: int = 1,
) -> SegmentationUNet:
    """The deterministic baseline: the same backbone without x_t and t, ``forward(image) -> logits``.

    Args:
        in_channels: image channels.
        channels: width of each level.
        num_res_blocks: residual blocks of each level.
        middle_blocks: residual blocks at the lowest resolution.
        downsample: conv | centred (``DownsampleKind``).
        padding: zeros | partial (``Padding``).
        out_channels: logit channels (``LabelScheme.channels``).
    """
    return SegmentationUNet(
        in_channels,
        out_channels=out_channels,
        channels=tuple(channels),
        num_res_blocks=tuple(num_res_blocks),
        middle_blocks=middle_blocks,
        downsample=downsample,
        padding=padding,
    )


NETWORKS: dict[str, Callable[..., nn.Module]] = {
    "medsegdiff-s": functools.partial(medsegdiff, "s"),
    "medsegdiff-b": functools.partial(medsegdiff, "b"),
    "medsegdiff-l": functools.partial(medsegdiff, "l"),
    # MedSegDiff's image encoder and decoder as a deterministic segmenter (an anchored trunk; method deterministic)
    "medsegdiff-s-segmenter": functools.partial(medsegdiff_segmenter, "s"),
    "medsegdiff-b-segmenter": functools.partial(medsegdiff_segmenter, "b"),
    "medsegdiff-l-segmenter": functools.partial(medsegdiff_segmenter, "l"),
    "diffusion-unet": diffusion_unet,
    "unet": segmentation_unet,
    "probunet": ProbUNet,  # option kind: aa (default) | aa_mix | fc | fc_mix
    "probunet-aa-mix": functools.partial(ProbUNet, kind="aa_mix"),
    "probunet-fc": functools.partial(ProbUNet, kind="fc"),
    "probunet-fc-mix": functools.partial(ProbUNet, kind="fc_mix"),
    "probunet-unet": ProbUNetDiffusionNet,  # the Gen. Prob. UNet's UNet as a diffusion network (Table 4)
    "phiseg": PHiSeg,
}

# Parameter counts the papers report (MedSegDiff Table 3, in millions; ambiguity paper Table 1, exact).
PAPER_PARAMS: dict[str, str] = {
    "medsegdiff-s": "13 M (MedSegDiff Table 3)",
    "medsegdiff-b": "25 M (MedSegDiff Table 3)",
    "medsegdiff-l": "41 M (MedSegDiff Table 3)",
    "diffusion-unet": "6,891,905 (ambiguity paper Table 1)",
    "probunet": "6,847,129 with kind=aa (ambiguity paper Table 1)",
    "probunet-aa-mix": "6,864,027 (ambiguity paper Table 1)",
    "probunet-fc": "6,844,945 (ambiguity paper Table 1)",
    "probunet-fc-mix": "6,882,467 (ambiguity paper Table 1)",
    "phiseg": "7,322,210 (ambiguity paper Table 1)",
}


STRUCTURAL = ("in_channels", "mask_channels", "out_channels")
"""Constructor parameters set from the data, not from ``model.options``."""


def allowed_options(name: str) -> list[str]:
    """Keyword options the constructor of ``name`` accepts (``model.options``; the ``STRUCTURAL`` ones excluded)."""
    params = inspect.signature(_constructor(name)).parameters.values()
    return [p.name for p in params if p.name not in STRUCTURAL and p.kind is not p.VAR_KEYWORD]


def takes_mask(name: str) -> bool:
    """Whether the network ``name`` reads a noisy mask x_t (a diffusion network with a ``mask_channels``)."""
    return "mask_channels" in inspect.signature(_constructor(name)).parameters


def _constructor(name: str) -> Callable[..., nn.Module]:
    if name not in NETWORKS:
        raise UserError(f"model {name!r} is not one of: {', '.join(NETWORKS)}")
    return NETWORKS[name]


def build_network(
    name: str, in_channels: int, out_channels: int = 1, mask_channels: int | None = None, **options: Any
) -> nn.Module:
    """Build the network ``name`` for ``in_channels`` image channels and ``out_channels`` predicted channels
    (``LabelScheme.channels``; binary 1); a diffusion network reads x_t of ``mask_channels`` channels (default
    ``out_channels``), the others take none. ``UserError`` on a bad name, option or channel count."""
    constructor = _constructor(name)
    allowed = allowed_options(name)
    params = inspect.signature(constructor).parameters.values()
    if not any(p.kind is p.VAR_KEYWORD for p in params):
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise UserError(
                f"model {name}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or 'none'}"
            )
    channels = {"out_channels": out_channels}
    if takes_mask(name):
        channels["mask_channels"] = out_channels if mask_channels is None else mask_channels
    elif mask_channels is not None:
        raise UserError(f"model {name}: takes no noisy mask, so mask_channels={mask_channels} has no meaning")
    for key, value in {"in_channels": in_channels, **channels}.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UserError(f"model {name}: {key} must be a positive integer, got {value!r}")
    try:
        return constructor(in_channels, **channels, **options)
    except (ValueError, TypeError, KeyError) as err:
        raise UserError(f"model {name}: invalid options {options}: {err}") from None


def describe(name: str, image_size: int = 256, in_channels: int = 1) -> str:
    """A short report: parameter count (beside the paper's), downsampling, sizes and top-level modules."""
    net = build_network(name, in_channels)
    total = sum(p.numel() for p in net.parameters())
    lines = [f"{name}: {total:,} parameters ({total / 1e6:.2f} M)"]
    if name in PAPER_PARAMS:
        lines.append(f"  paper:          {PAPER_PARAMS[name]}")
    lines.append(f"  in_channels:    {in_channels}")
    factor = getattr(net, "downsampling", None)
    if factor:
        lowest = f"{image_size // factor} x {image_size // factor}" if image_size % factor == 0 else "n/a"
        fits = "" if image_size % factor == 0 else f" (image size {image_size} is NOT divisible by {factor})"
        lines.append(f"  downsampling:   {factor}x; lowest resolution at {image_size} px: {lowest}{fits}")
    if callable(getattr(net, "structure", None)):
        lines.append(f"  structure:      {net.structure()}")
    options = ", ".join(allowed_options(name))
    lines.append(f"  options:        {options or 'none'}")
    lines.append("  modules:")
    for child_name, child in net.named_children():
        count = sum(p.numel() for p in child.parameters())
        lines.append(f"    {child_name:<16} {count:>12,}  {_summary(child)}")
    return "\n".join(lines)


def _summary(module: nn.Module) -> str:
    """One line about a top-level module: its type and, for a container, how many parts it holds."""
    kind = type(module).__name__
    if isinstance(module, (nn.ModuleList, nn.ModuleDict, nn.Sequential)):
        inner = sorted({type(m).__name__ for m in module.children()})
        return f"{kind} of {len(module)}: {', '.join(inner)}"
    return kind
