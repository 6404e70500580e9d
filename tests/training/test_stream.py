"""The resumable data stream of ``training.stream``: seeded epochs, resumption, a global batch split between ranks."""

from __future__ import annotations

import torch

from diffuseg.training.stream import StreamBatchSampler


def _batches(sampler: StreamBatchSampler) -> list:
    return list(iter(sampler))


def test_stream_resumes_with_the_same_batches():
    full = _batches(StreamBatchSampler(7, 3, seed=1, total_steps=10, start_step=0, start_position=0))
    tail = _batches(StreamBatchSampler(7, 3, seed=1, total_steps=10, start_step=4, start_position=4 * 3))
    assert len(full) == 10 and tail == full[4:]


def test_stream_epochs_are_permutations():
    batches = _batches(StreamBatchSampler(6, 2, seed=0, total_steps=6, start_step=0, start_position=0))
    items = [key for batch in batches for key in batch]
    for epoch in (0, 1):
        assert sorted(i for i, e in items if e == epoch) == list(range(6))


def test_stream_splits_global_batches_between_ranks(monkeypatch):
    single = _batches(StreamBatchSampler(10, 4, seed=3, total_steps=3, start_step=0, start_position=0))
    per_rank = []
    for rank in (0, 1):
        monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.distributed, "get_rank", lambda r=rank: r)
        monkeypatch.setattr(torch.distributed, "get_world_size", lambda: 2)
        per_rank.append(_batches(StreamBatchSampler(10, 2, seed=3, total_steps=3, start_step=0, start_position=0)))
    # with 2 ranks of 2 items, step s covers the same 4 stream items as one process with batch 4
    for step in range(2):
        assert per_rank[0][step] + per_rank[1][step] == single[step]
