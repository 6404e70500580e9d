"""MedSegDiff (Wu et al. 2022, section 2): a dual-encoder ResUNet with Dynamic Conditional Encoding and FF-Parser.

    eps_theta(x_t, I, t) = D((E_t^I + E_t^x, t), t)                       (eq. 2)
    A(m_I, m_x) = (LN(m_I) * LN(m_x)) * m_I                                (eq. 3)

Layout (``n`` encoder stages, stage ``s`` at 1/2^s of the input size, ``n - 1`` downsamplings):
- two encoders, one for the image I and one for the noisy mask x_t, each a stem convolution and stages
  0 .. n-2 of residual blocks (``blocks.ResBlock``; counts follow ResNet34's [3, 4, 6, 3], after one block
  at full resolution that plays the part of ResNet's stem; deeper variants repeat the 6-block stage);
- Dynamic Conditional Encoding at the middle two stages of the encoder (for [1, 3, 4, 6, 3]: the 4- and
  6-block stages, ResNet34's middle two): the image features at the end of the stage are replaced by
  A(m_I, m_x) and continue through the image encoder;
- E^I + E^x (the outputs of stage n-2 of both encoders) are added and sent to the last encoding stage n-1;
- a UNet decoder: per level, upsampling (nearest + conv), concatenation with the skip, residual blocks;
- the skip of level s is m_I^s + m_x^s (after Dy-Cond where it applies), passed through an FF-Parser
  (eqs. 4-6) on its way to the decoder, so the x_t-borne high frequencies are filtered where the two
  encoders' features are integrated;
- a shared learned time embedding (sinusoidal, linear, SiLU, linear) added in every residual block.

Switches ``dynamic_conditioning`` and ``ff_parser`` turn the two contributions off (Table 2: SegDiff-style
baseline, + Dy-Cond, + Dy-Cond + FF-Parser are three settings of this one class).

Work shared across ensemble members. Every residual block takes the time embedding, so all features depend
on t (E_t^I in eq. 2); across sampling steps nothing can be reused. Within one step, all K members of an
image share t, and the image encoder up to and including the first Dy-Cond stage (every image stage when
Dy-Cond is off) depends only on (I, t): it runs once per image and its features are broadcast to the K
members. From the first fusion on, image features depend on x_t and are computed per member, in groups of
``micro_batch`` rows when it is set: the shared stages still run once, and the rest runs on small batches
whose full-resolution activations stay in a CPU's cache.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from diffuseg.enums import DownsampleKind, Padding
from diffuseg.nets.blocks import Downsample, ResBlock, TimeEmbedding, Upsample, conv3x3, output_head
from diffuseg.nets.ffparser import FFParser

# Variants (section 3.2: S, B, L use 4x, 5x, 6x downsampling). Widths tuned towards Table 3 (13, 25, 41 M).
VARIANTS: dict[str, dict[str, tuple[int, ...]]] = {
    "s": {"stage_blocks": (1, 3, 4, 6, 3), "channel_mult": (1, 1, 2, 4, 11)},
    "b": {"stage_blocks": (1, 3, 4, 6, 6, 3), "channel_mult": (1, 1, 2, 4, 6, 12)},
    "l": {"stage_blocks": (1, 3, 4, 6, 6, 6, 3), "channel_mult": (1, 1, 2, 4, 6, 8, 8)},
}


class EncoderStage(nn.Module):
    """Optional downsampling (``kind``: ``blocks.DownsampleKind``), then ``blocks`` residual blocks, every 3x3
    convolution padded by ``padding``. (B, cin, H, W) -> (B, cout, H', W')."""

    def __init__(
        self,
        cin: int,
        cout: int,
        blocks: int,
        emb_dim: int,
        downsample: bool,
        kind: DownsampleKind | str = DownsampleKind.CONV,
        padding: Padding | str = Padding.ZEROS,
    ):
        super().__init__()
        self.down = Downsample(cin, kind=kind, padding=padding) if downsample else nn.Identity()
        self.blocks = nn.ModuleList(ResBlock(cin if i == 0 else cout, cout, emb_dim, padding) for i in range(blocks))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        for block in self.blocks:
            x = block(x, emb)
        return x


class DecoderStage(nn.Module):
    """Upsample (B, cin, H, W) to (B, cout, 2H, 2W), concatenate the skip (B, cout, 2H, 2W), residual blocks."""

    def __init__(self, cin: int, cout: int, blocks: int, emb_dim: int, padding: Padding | str = Padding.ZEROS):
        super().__init__()
        self.up = Upsample(cin, cout, padding)
        self.blocks = nn.ModuleList(
            ResBlock(2 * cout if i == 0 else cout, cout, emb_dim, padding) for i in range(blocks)
        )

    def forward(self, x: torch.Tensor, skip: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        x = torch.cat([self.up(x), skip], dim=1)
        for block in self.blocks:
            x = block(x, emb)
        return x


class AttentiveFusion(nn.Module):
    """Dynamic Conditional Encoding, eq. 3: A(m_I, m_x) = (LN(m_I) * LN(m_x)) * m_I, all element-wise.

    m_I, m_x: (B, F, H, W) -> (B, F, H, W). LN is layer normalisation over the whole feature (F, H, W) of
    each sample, i.e. ``GroupNorm(1, F)`` (Wu & He 2018 show GN with one group is LayerNorm), with a learned
    per-channel scale and shift (initialised to 1 and 0). Normalising over (F, H, W) rather than per pixel
    keeps the spatial contrast of each map, so the product is an affinity map over positions that highlights
    where the image and the current mask estimate both respond; a per-channel affine (instead of one weight
    per (F, H, W) element) keeps the layer independent of the feature size.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm_image = nn.GroupNorm(1, channels)
        self.norm_mask = nn.GroupNorm(1, channels)

    def forward(self, m_image: torch.Tensor, m_mask: torch.Tensor) -> torch.Tensor:
        return self.norm_image(m_image) * self.norm_mask(m_mask) * m_image


def _repeat_members(h: torch.Tensor, members: int) -> torch.Tensor:
    """(B, ...) per image -> (B*K, ...) image-major, member k of image b at row b*K + k."""
    return h if members == 1 else h.repeat_interleave(members, dim=0)


def _add_members(per_member: torch.Tensor, per_image: torch.Tensor, members: int) -> torch.Tensor:
    """per_member (B*K, ...) + per_image (B, ...) broadcast to each image's K rows -> (B*K, ...)."""
    if per_member.shape[0] == per_image.shape[0]:
        return per_member + per_image
    return (per_member.unflatten(0, (-1, members)) + per_image.unsqueeze(1)).flatten(0, 1)


def _parts(images: int, members: int, rows: int) -> Iterator[tuple[slice, slice, int]]:
    """Split ``images * members`` image-major rows into parts of at most ``rows`` rows (at least one member):
    whole images when ``rows >= members``, else groups of one image's members. Yields (row slice, image slice,
    members per image in the part)."""
    if rows >= members:
        per = rows // members
        for b in range(0, images, per):
            end = min(b + per, images)
            yield slice(b * members, end * members), slice(b, end), members
        return
    for b in range(images):
        for k in range(0, members, rows):
            n = min(rows, members - k)
            yield slice(b * members + k, b * members + k + n), slice(b, b + 1), n


def check_stages(stage_blocks: Sequence[int], channels: Sequence[int], decoder_blocks: int, ff_max_size: int) -> int:
    """The number of stages n after checking that there are at least 4, one width each, and positive sizes."""
    n = len(stage_blocks)
    if n < 4 or len(channels) != n:
        raise ValueError(f"need >= 4 stages and one width per stage, got {stage_blocks} and {channels}")
    if min(channels) < 1 or min(stage_blocks) < 1 or decoder_blocks < 1 or ff_max_size < 1:
        raise ValueError("widths, block counts and ff_max_size must be >= 1")
    return n


def skip_filters(channels: Sequence[int], ff_parser: bool, ff_reference_size: int, ff_max_size: int) -> nn.ModuleList:
    """One FF-Parser (eqs. 4-6) per skip of stages 0 .. n-2, stored at the skip's size for a ``ff_reference_size``
    input and at most ``ff_max_size`` per side; identities without ``ff_parser``."""
    return nn.ModuleList(
        FFParser(channels[s], (min(ff_max_size, ff_reference_size >> s),) * 2) if ff_parser else nn.Identity()
        for s in range(len(channels) - 1)
    )


class MedSegDiff(nn.Module):
    """Dual-encoder ResUNet of MedSegDiff.

    forward(x_t (B*K, mask_channels, H, W), t (B*K,), image (B, in_channels, H, W)) -> (B*K, out_channels, H, W),
    K ensemble members per image. With classes the mask encoder reads x_t of ``LabelScheme.channels`` channels
    (C, C + 1 for exclusive classes) and the head predicts as many; ``mask_channels`` and ``out_channels`` are
    separate so that x_t can
    carry more than the prediction (e.g. a self-conditioning estimate). Binary: both 1, as in the paper.
    H and W must be divisible by 2^(len(stage_blocks) - 1). ``channels[s]`` is the width of stage s.
    ``downsample`` (``blocks.DownsampleKind``) and ``padding`` (``blocks.Padding``) default to the paper's
    strided convolution and zero padding (``centred`` treats the four corners alike; ``partial``: see there).
    FF-Parser filters are stored at the skip's size for a ``ff_reference_size`` input, at most
    ``ff_max_size`` per side (see ``ffparser``); any other size resamples them.
    """

    micro_batch: int = 0
    """Rows of the per-member part of a call computed at once (0: all; ``sample.micro_batch``). The image-only
    stages still run once per image; on a CPU, one member at a time keeps full-resolution activations in cache."""

    def __init__(
        self,
        in_channels: int,
        stage_blocks: Sequence[int],
        channels: Sequence[int],
        decoder_blocks: int = 2,
        dynamic_conditioning: bool = True,
        ff_parser: bool = True,
        ff_reference_size: int = 256,
        ff_max_size: int = 64,
        out_channels: int = 1,
        mask_channels: int = 1,
        downsample: DownsampleKind | str = DownsampleKind.CONV,
        padding: Padding | str = Padding.ZEROS,
    ):
        super().__init__()
        padding = Padding.parse(padding)
        n = check_stages(stage_blocks, channels, decoder_blocks, ff_max_size)
        if mask_channels < 1 or out_channels < 1:
            raise ValueError(f"mask_channels and out_channels must be >= 1, got {mask_channels}, {out_channels}")
        self.mask_channels, self.out_channels = mask_channels, out_channels
        self.num_stages = n
        self.stage_blocks = tuple(stage_blocks)
        self.channels = tuple(channels)
        self.downsampling = 2 ** (n - 1)
        self.fusion_stages = ((n - 1) // 2, (n - 1) // 2 + 1) if dynamic_conditioning else ()
        # Last image stage that depends on (I, t) only: computed once per image.
        self.shared_until = self.fusion_stages[0] if dynamic_conditioning else n - 2
        emb_dim = 4 * channels[0]
        self.time_embed = TimeEmbedding(channels[0], emb_dim)
        self.image_stem = conv3x3(in_channels, channels[0], padding=padding)
        self.mask_stem = conv3x3(mask_channels, channels[0], padding=padding)

        def stage(s: int) -> EncoderStage:
            return EncoderStage(
                channels[max(s - 1, 0)], channels[s], stage_blocks[s], emb_dim, s > 0, downsample, padding
            )

        def encoder() -> nn.ModuleList:
            return nn.ModuleList(stage(s) for s in range(n - 1))

        self.image_encoder = encoder()
        self.mask_encoder = encoder()
        self.fusion = nn.ModuleDict({str(s): AttentiveFusion(channels[s]) for s in self.fusion_stages})
        self.last_stage = EncoderStage(
            channels[n - 2], channels[n - 1], stage_blocks[n - 1], emb_dim, True, downsample, padding
        )
        self.skip_filters = skip_filters(channels, ff_parser, ff_reference_size, ff_max_size)
        self.decoder = nn.ModuleList(
            DecoderStage(channels[s + 1], channels[s], decoder_blocks, emb_dim, padding) for s in reversed(range(n - 1))
        )
        self.head = output_head(channels[0], out_channels, padding)

    def structure(self) -> str:
        """One line for ``diffuseg info``: blocks and widths per stage, where Dy-Cond and FF-Parser are."""
        ff = "on every skip" if isinstance(self.skip_filters[0], FFParser) else "off"
        fusion = ", ".join(map(str, self.fusion_stages)) or "off"
        return (
            f"stage blocks {list(self.stage_blocks)}, widths {list(self.channels)}; Dy-Cond at stages {fusion}; "
            f"FF-Parser {ff}; image stages 0..{self.shared_until} computed once per image"
        )

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        members = x_t.shape[0] // image.shape[0]
        if members * image.shape[0] != x_t.shape[0]:
            raise ValueError(f"x_t rows ({x_t.shape[0]}) must be a multiple of image rows ({image.shape[0]})")
        emb = self.time_embed(t)  # (B*K, E)
        shared = self._image_stages(image, emb[::members])  # members of one image share t
        if not 0 < self.micro_batch < x_t.shape[0]:
            return self._member_stages(x_t, emb, shared, members)
        parts = _parts(image.shape[0], members, self.micro_batch)
        return torch.cat([self._member_stages(x_t[r], emb[r], [h[i] for h in shared], k) for r, i, k in parts])

    def _image_stages(self, image: torch.Tensor, emb: torch.Tensor) -> list[torch.Tensor]:
        """Image encoder stages 0..``shared_until`` on (B, in_channels, H, W) with emb (B, E): one feature per stage."""
        h = self.image_stem(image)
        features = []
        for s in range(self.shared_until + 1):
            h = self.image_encoder[s](h, emb)
            features.append(h)
        return features

    def _member_stages(
        self, x_t: torch.Tensor, emb: torch.Tensor, shared: list[torch.Tensor], members: int
    ) -> torch.Tensor:
        """Everything that depends on x_t: (B*K, mask_channels, H, W) rows, ``shared`` per-image features
        -> (B*K, out_channels, H, W)."""
        h_mask = self.mask_stem(x_t)
        h_img = shared[0]
        skips = []
        for s in range(self.num_stages - 1):
            h_img = shared[s] if s <= self.shared_until else self.image_encoder[s](h_img, emb)
            h_mask = self.mask_encoder[s](h_mask, emb)
            if str(s) in self.fusion:
                if s == self.shared_until:
                    h_img = _repeat_members(h_img, members)
                h_img = self.fusion[str(s)](h_img, h_mask)
            skips.append(self.skip_filters[s](_add_members(h_mask, h_img, members)))
        h = self.last_stage(_add_members(h_mask, h_img, members), emb)  # E^I + E^x -> last stage
        for stage, skip in zip(self.decoder, reversed(skips)):
            h = stage(h, skip, emb)
        return self.head(h)


def medsegdiff(
    variant: str,
    in_channels: int,
    base_channels: int = 32,
    dynamic_conditioning: bool = True,
    ff_parser: bool = True,
    decoder_blocks: int = 2,
    ff_max_size: int = 64,
    downsample: str = "conv",
    padding: str = "zeros",
    out_channels: int = 1,
    mask_channels: int = 1,
) -> MedSegDiff:
    """MedSegDiff-S/B/L with stage widths ``base_channels * channel_mult`` (``VARIANTS``).

    Args:
        variant: "s", "b" or "l".
        in_channels: image channels.
        base_channels: width of the first stage.
        dynamic_conditioning: Dy-Cond (eq. 3) at the middle two stages.
        ff_parser: an FF-Parser (eqs. 4-6) on every skip.
        decoder_blocks: residual blocks per decoder stage.
        ff_max_size: the largest side of a stored FF-Parser filter.
        downsample: conv (the paper's) | centred (``DownsampleKind``).
        padding: zeros (the paper's) | partial (``Padding``).
        out_channels: channels of the prediction (``LabelScheme.channels``; binary 1).
        mask_channels: channels of x_t (``LabelScheme.channels``; binary 1).
    """
    spec = VARIANTS[variant]
    return MedSegDiff(
        in_channels,
        spec["stage_blocks"],
        [base_channels * m for m in spec["channel_mult"]],
        decoder_blocks=decoder_blocks,
        dynamic_conditioning=dynamic_conditioning,
        ff_parser=ff_parser,
        ff_max_size=ff_max_size,
        out_channels=out_channels,
        mask_channels=mask_channels,
        downsample=downsample,
        padding=padding,
    )
