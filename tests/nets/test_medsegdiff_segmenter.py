"""MedSegDiff's encoder-decoder as a deterministic segmenter."""

from __future__ import annotations

import torch

from diffuseg.nets.medsegdiff_segmenter import MedSegDiffSegmenter
from diffuseg.nets.registry import build_network


def test_the_segmenter_is_medsegdiffs_image_half_without_time_or_mask():
    torch.manual_seed(0)
    segmenter = build_network("medsegdiff-b-segmenter", 1, 1, base_channels=4)
    full = build_network("medsegdiff-b", 1, 1, base_channels=4)
    assert isinstance(segmenter, MedSegDiffSegmenter) and segmenter.downsampling == full.downsampling == 32
    names = {n for n, _ in segmenter.named_modules()}
    assert not any("emb_proj" in n or "mask" in n or "fusion" in n or "time" in n for n in names)
    image_half = sum(
        p.numel()
        for n, p in full.named_parameters()
        if n.startswith(("image_", "last_stage", "skip_filters", "decoder", "head")) and "emb_proj" not in n
    )
    assert sum(p.numel() for p in segmenter.parameters()) == image_half


def test_the_segmenter_takes_c_channels_and_any_multiple_of_its_downsampling():
    torch.manual_seed(0)
    net = build_network("medsegdiff-s-segmenter", 2, 4, base_channels=4, ff_parser=False).eval()
    with torch.no_grad():
        assert net(torch.randn(3, 2, 32, 48)).shape == (3, 4, 32, 48)
