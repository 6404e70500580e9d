"""Gaussian noise drawn from one generator, or from one generator per batch row.

Per-row generators make every ensemble member's noise depend only on its own seed, so a member's sample
is the same whatever the batch it is drawn in.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Generators = torch.Generator | Sequence[torch.Generator]


def randn(shape: Sequence[int], generator: Generators, *, device=None, dtype=torch.float32) -> Tensor:
    """Standard normal noise of ``shape``; with a list of generators, row i comes from generator i."""
    if isinstance(generator, torch.Generator):
        return torch.randn(tuple(shape), generator=generator, device=generator.device, dtype=dtype).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]} rows")
    rows = [torch.randn(tuple(shape[1:]), generator=g, device=g.device, dtype=dtype) for g in generator]
    return torch.stack(rows).to(device)
