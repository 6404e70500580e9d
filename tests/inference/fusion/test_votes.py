"""Majority and plurality votes, mean-and-threshold and argmax of the mean, by hand; one label gives the binary
votes."""

from __future__ import annotations

import pytest
import torch

from diffuseg.inference.fusion import fuse
from diffuseg.inference.fusion.raters import one_hot
from diffuseg.inference.fusion.votes import majority_vote, mean_argmax, mean_threshold, plurality_vote


def test_vote_and_mean_by_hand() -> None:
    # three raters of a 1x4 image: votes per pixel 0, 1, 2, 3
    masks = torch.tensor([[[[0, 1, 1, 1]], [[0, 0, 1, 1]], [[0, 0, 0, 1]]]], dtype=torch.float32)
    fused, frac = majority_vote(masks)
    assert fused.tolist() == [[[0.0, 0.0, 1.0, 1.0]]]
    assert frac[0, 0, 1].item() == pytest.approx(1 / 3)
    fused, _ = mean_threshold(masks, threshold=0.3)
    assert fused.tolist() == [[[0.0, 1.0, 1.0, 1.0]]]
    # a tie of two raters: the vote says background, mean >= 0.5 says foreground
    tie = torch.tensor([[[[1.0]], [[0.0]]]])
    assert majority_vote(tie)[0].item() == 0.0
    assert mean_threshold(tie)[0].item() == 1.0


def test_plurality_vote_and_mean_by_hand() -> None:
    # 4 raters of a 1 x 4 image: pixel 0 all 2; pixel 1 two 1s, one 2, one 0; pixel 2 ties 1/2; pixel 3 ties 0/3
    a = torch.tensor([[[2, 1, 1, 0]], [[2, 1, 2, 0]], [[2, 2, 1, 3]], [[2, 0, 2, 3]]])[None]
    fused, freq = plurality_vote(a, 3)
    assert fused.tolist() == [[[2, 1, 1, 0]]]
    assert freq[0, :, 0, 1].tolist() == [0.25, 0.5, 0.25, 0.0]
    assert torch.equal(mean_argmax(a, 3)[0], fused)
    soft = one_hot(a, 3, 2).float()
    soft[0, 0, :, 0, 3] = torch.tensor([0.0, 0.0, 0.1, 0.9])  # rater 0 leans to 3 at pixel 3: 3 now wins
    assert mean_argmax(a, 3, soft)[0].tolist() == [[[2, 1, 1, 3]]]
    with pytest.raises(ValueError, match="L \\+ 1"):
        mean_argmax(a, 3, soft[:, :, :3])


def test_votes_with_one_label_are_the_binary_votes() -> None:
    g = torch.Generator().manual_seed(0)
    for r in (1, 2, 3, 4, 7):
        m = (torch.rand(3, r, 9, 9, generator=g) > 0.5).long()
        fused, freq = plurality_vote(m, 1)
        want, frac = majority_vote(m.float())
        assert torch.equal(fused.float(), want)
        torch.testing.assert_close(freq[:, 1], frac)
        assert torch.equal(fuse("vote", m, labels=1)[0], want)
