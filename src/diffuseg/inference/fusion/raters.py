"""The raters of a case as the fusion algorithms read them: shape and value checks, one-hot label maps, label
frequencies, a first-index argmax, and the distinct columns of votes that both STAPLE variants iterate over.

Raters are ensemble members or annotators (``R`` of them per case). A label map holds atoms ``0..L``
(0 = background; ``labels.LabelScheme`` maps label values to atoms); a binary mask is the case ``L = 1``.
"""

from __future__ import annotations

import torch


def check_masks(masks: torch.Tensor) -> torch.Tensor:
    """``masks`` after checking it is ``(B, R, *spatial)`` with at least one rater."""
    if masks.dim() < 3:
        raise ValueError(f"expected masks of shape (B, R, *spatial), got {tuple(masks.shape)}")
    if masks.shape[1] < 1:
        raise ValueError("expected at least one rater per case")
    return masks


def check_atoms(atoms: torch.Tensor, labels: int, spatial_from: int = 2) -> torch.Tensor:
    """``atoms`` as int64, after checking it is an integer (or bool) tensor of values ``0..labels`` with at least
    one axis before the spatial ones start at ``spatial_from``."""
    if atoms.dim() <= spatial_from:
        raise ValueError(f"expected label maps with {spatial_from} leading axes, got shape {tuple(atoms.shape)}")
    if atoms.is_floating_point() or atoms.is_complex():
        raise ValueError(f"expected integer label maps (atoms 0..{labels}), got {atoms.dtype}")
    if labels < 1:
        raise ValueError(f"labels (L, the number of foreground atoms) must be >= 1, got {labels}")
    atoms = atoms.long()
    if atoms.numel() and (int(atoms.min()) < 0 or int(atoms.max()) > labels):
        raise ValueError(f"label maps hold values outside 0..{labels}: {int(atoms.min())}..{int(atoms.max())}")
    return atoms


def one_hot(atoms: torch.Tensor, labels: int, dim: int) -> torch.Tensor:
    """``(..., *spatial)`` atoms ``0..labels`` -> bool one-hot with a new axis of ``labels + 1`` at ``dim``."""
    out = torch.nn.functional.one_hot(atoms.long(), labels + 1).bool()
    return out.movedim(-1, dim if dim >= 0 else atoms.dim() + 1 + dim)


def label_frequencies(atoms: torch.Tensor, labels: int, member_dim: int = 1) -> torch.Tensor:
    """The fraction of raters giving each label: ``(..., R, ...)`` with raters at ``member_dim`` ->
    ``(..., L + 1, ...)`` float32, the label axis where the raters were; sums to 1 over it."""
    atoms = check_atoms(atoms, labels, member_dim + 1)
    return one_hot(atoms, labels, member_dim + 1).float().mean(member_dim)


def first_argmax(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Argmax over ``dim`` with ties to the lowest index (``torch.argmax`` does not promise which)."""
    dim = dim % values.dim()
    top = values.amax(dim, keepdim=True)
    index = torch.arange(values.shape[dim], device=values.device).view(-1, *([1] * (values.dim() - dim - 1)))
    return torch.where(values == top, index, values.shape[dim]).amin(dim)


_WORD_BITS = 30  # raters packed per integer word when finding the distinct rater patterns


def rater_patterns(d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct columns of one case's votes ``d`` ``(R, N)`` bool.

    Returns ``(patterns (R, U) bool, counts (U,) long, inverse (N,) long)`` with ``d == patterns[:, inverse]``.
    Each column is read as a binary number (30 raters at a time, folded into the ids found so far).
    """
    r, n = d.shape
    ids = torch.zeros(n, dtype=torch.long, device=d.device)
    for start in range(0, r, _WORD_BITS):
        key = ids  # fewer than 2^33 distinct ids before the shift: the key fits in 63 bits
        for j in range(start, min(start + _WORD_BITS, r)):
            key = key * 2 + d[j]
        _, ids = torch.unique(key, return_inverse=True)
    counts = torch.bincount(ids)
    first = torch.empty_like(counts).scatter_(0, ids, torch.arange(n, device=d.device))
    return d[:, first], counts, ids


def distinct_columns(votes: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The distinct columns of each case's votes ``(B, V, N)`` bool, zero-padded to the largest count ``U``:
    ``(d (B, V, U) dtype, weight (B, U) dtype voxels per column (0 for padding), inverse (B, N) long)``."""
    b, v = votes.shape[:2]
    found = [rater_patterns(votes[i]) for i in range(b)]
    u = max(c.numel() for _, c, _ in found)
    d = torch.zeros(b, v, u, dtype=dtype, device=votes.device)
    weight = torch.zeros(b, u, dtype=dtype, device=votes.device)
    for i, (pat, cnt, _) in enumerate(found):
        d[i, :, : cnt.numel()] = pat.to(dtype)
        weight[i, : cnt.numel()] = cnt.to(dtype)
    return d, weight, torch.stack([inv for _, _, inv in found])
