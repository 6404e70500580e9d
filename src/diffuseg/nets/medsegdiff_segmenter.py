"""MedSegDiff's encoder-decoder as a deterministic segmenter: ``forward(image) -> logits``.

The image half of ``medsegdiff.MedSegDiff`` (Wu et al. 2022, section 2): the image stem and encoder stages
0 .. n-2, the last encoder stage, FF-Parser filters on the skips (eqs. 4-6) and the UNet decoder, with the same
stage counts and widths per variant (``medsegdiff.VARIANTS``). What reads the noisy mask is left out: the
mask encoder, Dynamic Conditional Encoding (eq. 3 multiplies image by mask features) and the time embedding
(the residual blocks take no time input). So the architecture can be trained with the UNet's loss
(``nets.unet.segmentation_loss``), on its own (``method: deterministic``) or as the trunk of anchored diffusion
(``features`` / ``logits``).
"""

from __future__ import annotations

import torch
from torch import nn

from diffuseg.enums import Padding
from diffuseg.nets.blocks import conv3x3, output_head
from diffuseg.nets.medsegdiff import VARIANTS, DecoderStage, EncoderStage, check_stages, skip_filters


class MedSegDiffSegmenter(nn.Module):
    """forward(image (B, in_channels, H, W)) -> logits (B, out_channels, H, W), ``LabelScheme.channels`` of them.

    ``features(image)`` -> the last decoder features (B, ``feature_channels`` = channels[0], H, W);
    ``logits(features)`` -> the output head. H and W must be divisible by 2^(len(stage_blocks) - 1).
    ``downsample``, ``padding``, ``decoder_blocks``, ``ff_parser``, ``ff_max_size`` as for ``MedSegDiff``.
    """

    def __init__(
        self,
        in_channels: int,
        stage_blocks: tuple[int, ...],
        channels: tuple[int, ...],
        decoder_blocks: int = 2,
        ff_parser: bool = True,
        ff_reference_size: int = 256,
        ff_max_size: int = 64,
        out_channels: int = 1,
        downsample: str = "conv",
        padding: str = "zeros",
    ):
        super().__init__()
        padding = Padding.parse(padding)
        n = check_stages(stage_blocks, channels, decoder_blocks, ff_max_size)
        self.downsampling = 2 ** (n - 1)
        self.feature_channels = channels[0]
        self.stem = conv3x3(in_channels, channels[0], padding=padding)
        self.encoder = nn.ModuleList(
            EncoderStage(channels[max(s - 1, 0)], channels[s], stage_blocks[s], None, s > 0, downsample, padding)
            for s in range(n - 1)
        )
        self.last_stage = EncoderStage(
            channels[n - 2], channels[n - 1], stage_blocks[n - 1], None, True, downsample, padding
        )
        self.skip_filters = skip_filters(channels, ff_parser, ff_reference_size, ff_max_size)
        self.decoder = nn.ModuleList(
            DecoderStage(channels[s + 1], channels[s], decoder_blocks, None, padding) for s in reversed(range(n - 1))
        )
        self.head = output_head(channels[0], out_channels, padding)

    def features(self, image: torch.Tensor) -> torch.Tensor:
        h = self.stem(image)
        skips = []
        for stage, ff in zip(self.encoder, self.skip_filters):
            h = stage(h, None)
            skips.append(ff(h))
        h = self.last_stage(h, None)
        for stage, skip in zip(self.decoder, reversed(skips)):
            h = stage(h, skip, None)
        return h

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.logits(self.features(image))


def medsegdiff_segmenter(
    variant: str,
    in_channels: int,
    base_channels: int = 32,
    ff_parser: bool = True,
    decoder_blocks: int = 2,
    ff_max_size: int = 64,
    downsample: str = "conv",
    padding: str = "zeros",
    out_channels: int = 1,
) -> MedSegDiffSegmenter:
    """The segmenter of MedSegDiff-S/B/L, stage widths ``base_channels * channel_mult`` (``medsegdiff.VARIANTS``).

    Args:
        variant: "s", "b" or "l".
        in_channels: image channels.
        base_channels: width of the first stage.
        ff_parser: an FF-Parser (eqs. 4-6) on every skip.
        decoder_blocks: residual blocks per decoder stage.
        ff_max_size: the largest side of a stored FF-Parser filter.
        downsample: conv (the paper's) | centred (``DownsampleKind``).
        padding: zeros (the paper's) | partial (``Padding``).
        out_channels: logit channels (``LabelScheme.channels``; binary 1).
    """
    spec = VARIANTS[variant]
    return MedSegDiffSegmenter(
        in_channels,
        spec["stage_blocks"],
        tuple(base_channels * m for m in spec["channel_mult"]),
        decoder_blocks=decoder_blocks,
        ff_parser=ff_parser,
        ff_max_size=ff_max_size,
        out_channels=out_channels,
        downsample=downsample,
        padding=padding,
    )
