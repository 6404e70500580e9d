"""Member seeds: member ``k`` of case ``c`` starts from its own generator, seeded from ``(sample.seed, c, k)``.

The seed is a stable hash (BLAKE2b, not Python's salted ``hash``), so a member's noise does not depend on the
batch it is drawn in, on which cases share that batch, on their order, on the process that draws it, or on
whether ``predict``, sampled validation or a benchmark draws it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch


def member_seed(seed: int, case_id: str, k: int) -> int:
    """A 63-bit seed for member ``k`` of ``case_id``, stable across runs, machines and Python versions."""
    digest = hashlib.blake2b(f"{int(seed)}\x1f{case_id}\x1f{int(k)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def member_generators(seed: int, case_id: str, members: Iterable[int], device: torch.device) -> list:
    """One ``torch.Generator`` on ``device`` per member index in ``members``."""
    return [torch.Generator(device=device).manual_seed(member_seed(seed, case_id, k)) for k in members]
