"""Tiny ambiguous data for the baseline tests: a bright disc that one annotator marks and the other
marks larger or not at all, so the masks of one image disagree in a known way."""

import pytest
import torch


def ambiguous_blobs(batch: int = 4, size: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, 1, S, S) float, masks (B, 2, S, S) {0, 1}: annotator 0 the disc, annotator 1 a larger
    disc on even items and nothing on odd ones."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images, masks = [], []
    for i in range(batch):
        cy, cx = (torch.rand(2, generator=g) * (size / 2) + size / 4).tolist()
        r = size / 6
        dist2 = (yy - cy) ** 2 + (xx - cx) ** 2
        disc = (dist2 <= r**2).float()
        other = (dist2 <= (r + 2) ** 2).float() if i % 2 == 0 else torch.zeros_like(disc)
        images.append(disc + 0.1 * torch.randn(size, size, generator=g))
        masks.append(torch.stack([disc, other]))
    return torch.stack(images)[:, None], torch.stack(masks)


@pytest.fixture
def blobs():
    return ambiguous_blobs()
