"""Fusion of several binary masks of one case into one: STAPLE, mean-and-threshold, majority vote.
(Label maps with several foreground labels: ``inference.label_fusion``; ``fuse(..., labels=L)`` picks it.)

All functions are batched over cases: ``masks`` is ``(B, R, *spatial)`` with ``R`` raters (ensemble members
or annotators) per case, values in ``{0, 1}`` (bool, integer or float). They run on the input's device.

STAPLE follows Warfield, Zou & Wells, "Simultaneous Truth and Performance Level Estimation (STAPLE)",
IEEE TMI 23(7), 2004: expectation-maximisation over one sensitivity ``p_j`` and one specificity ``q_j`` per
rater, with a prior probability ``g`` that a voxel is foreground. Where the paper leaves choices open we take
those of ITK's ``STAPLEImageFilter`` (what SimpleITK runs), so that the two can be tested against each other:

- the prior ``g`` is the mean foreground fraction over all raters and voxels (constant over space);
- the EM starts from ``W`` = the mean of the raters and begins with the M-step;
- it stops when every ``p_j`` and ``q_j`` moved by at most ``tol`` in one iteration (ITK: squared change
  ``<= 1e-14``, i.e. ``tol = 1e-7``), or after ``max_iter`` iterations.

Degenerate cases, where SimpleITK divides by zero and returns NaN: when every rater is empty, the consensus
is empty (``W = 0``); when every rater marks every voxel, it is full (``W = 1``). Identical raters give that
mask.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffuseg.enums import Fusion


@dataclass(frozen=True)
class StapleResult:
    """STAPLE output for a batch of ``B`` cases with ``R`` raters.

    ``probability``: ``(B, *spatial)`` posterior ``W_i = P(T_i = 1 | D, p, q)``, Warfield et al. eq. 14-16.
    ``sensitivity``, ``specificity``: ``(B, R)`` the final ``p_j`` and ``q_j`` (eq. 18-19).
    ``prior``: ``(B,)`` the foreground prior ``g``. ``iterations``: ``(B,)`` EM iterations run per case.
    ``converged``: ``(B,)`` whether the tolerance was met before ``max_iter``.
    """

    probability: torch.Tensor
    sensitivity: torch.Tensor
    specificity: torch.Tensor
    prior: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor

    def mask(self, threshold: float = 0.5) -> torch.Tensor:
        """``(B, *spatial)`` float {0, 1}: ``probability >= threshold``."""
        return (self.probability >= threshold).to(self.probability.dtype)


def _check(masks: torch.Tensor) -> torch.Tensor:
    if masks.dim() < 3:
        raise ValueError(f"expected masks of shape (B, R, *spatial), got {tuple(masks.shape)}")
    if masks.shape[1] < 1:
        raise ValueError("expected at least one rater per case")
    return masks


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


def staple(
    masks: torch.Tensor,
    *,
    max_iter: int = 100,
    tol: float = 1e-7,
    dtype: torch.dtype = torch.float64,
    check_every: int = 1,
) -> StapleResult:
    """STAPLE (Warfield, Zou & Wells 2004) for ``masks`` ``(B, R, *spatial)`` in {0, 1}, batched over ``B``.

    ``W_i`` depends on voxel ``i`` only through its column of votes ``D_i``, so the EM runs over the
    distinct columns (a few hundred for 25 realistic 256 x 256 masks), each weighted by how many voxels
    have it: the same sums as eq. 14-19, grouped. Each iteration costs two batched matrix-vector products
    in ``dtype``; the E-step is done in log-odds (``logit W = logit g + sum_j log-likelihood ratios``), so
    many raters cannot underflow. Cases are independent: one that has converged is frozen while the others
    go on, so a case's result does not depend on which cases share its batch. In float32 the tolerance is at
    least ``4 * eps`` (about 5e-7), which rounding lets it reach. Host synchronisation: once
    per case to find its patterns, then only the convergence test every ``check_every`` iterations.
    """
    _check(masks)
    if max_iter < 1:
        raise ValueError("max_iter must be >= 1")
    b, r = masks.shape[:2]
    spatial = masks.shape[2:]
    flat = masks.reshape(b, r, -1)
    votes = flat > 0.5 if flat.is_floating_point() else flat != 0
    n = votes.shape[-1]
    found = [rater_patterns(votes[i]) for i in range(b)]
    u = max(c.numel() for _, c, _ in found)
    d = torch.zeros(b, r, u, dtype=dtype, device=votes.device)  # (B, R, U) distinct columns, zero-padded
    weight = torch.zeros(b, u, dtype=dtype, device=votes.device)  # (B, U) voxels per column; 0 for padding
    for i, (pat, cnt, _) in enumerate(found):
        d[i, :, : cnt.numel()] = pat.to(dtype)
        weight[i, : cnt.numel()] = cnt.to(dtype)
    inverse = torch.stack([inv for _, _, inv in found])  # (B, N)

    eps, tiny = torch.finfo(dtype).eps, torch.finfo(dtype).tiny
    lim = -math.log(tiny) - 8.0  # exp(-lim) is a normal number
    tol = max(tol, 4 * eps)  # float32 rounding keeps p, q moving by a few 1e-7: the tolerance it can reach
    counts = torch.bmm(d, weight.unsqueeze(-1)).squeeze(-1)  # (B, R) foreground voxels per rater
    w = d.mean(1)  # (B, U) initial W: the mean of the raters
    prior = (weight * w).sum(-1) / n  # (B,) g, the mean foreground fraction
    logit_g = torch.logit(prior.clamp(eps, 1 - eps)).unsqueeze(-1)
    ones = torch.ones((), dtype=dtype, device=d.device)

    p = torch.zeros(b, r, dtype=dtype, device=d.device)
    q = torch.zeros_like(p)
    active = torch.ones(b, dtype=torch.bool, device=d.device)
    iterations = torch.zeros(b, dtype=torch.long, device=d.device)
    converged = torch.zeros(b, dtype=torch.bool, device=d.device)
    for it in range(max_iter):
        # M-step (eq. 18-19): p_j = sum_i W_i D_ij / sum_i W_i, q_j = sum_i (1-W_i)(1-D_ij) / sum_i (1-W_i).
        ww = weight * w
        dw = torch.bmm(d, ww.unsqueeze(-1)).squeeze(-1)  # (B, R) sum_i W_i D_ij
        sw = ww.sum(-1, keepdim=True)  # (B, 1)
        sb = n - sw
        # An empty sum: no voxel is (resp. is not) foreground; any value maximises, 1 keeps W at 0 (resp. 1).
        p_new = torch.where(sw > 0, dw / sw.clamp_min(eps), ones)
        q_new = torch.where(sb > 0, (sb - (counts - dw)) / sb.clamp_min(eps), ones)
        p_new, q_new = p_new.clamp(0, 1), q_new.clamp(0, 1)
        # E-step (eq. 14-16) in log-odds; a_j for D_ij = 1 and c_j for D_ij = 0.
        # log 0 is taken as log(tiny), so that 0 * log 0 stays 0 in the matrix product.
        lp, l1p = torch.log(p_new.clamp_min(tiny)), torch.log((1 - p_new).clamp_min(tiny))
        lq, l1q = torch.log(q_new.clamp_min(tiny)), torch.log((1 - q_new).clamp_min(tiny))
        a, c = lp - l1q, l1p - lq
        logit_w = logit_g + c.sum(-1, keepdim=True) + torch.bmm((a - c).unsqueeze(1), d).squeeze(1)
        # Posteriors below exp(-lim) are set to exactly 0: no subnormal numbers (slow on CPUs), and W = 0 where
        # every likelihood ratio says so, as in ITK. Above +lim the sigmoid is already exactly 1.
        w_new = torch.sigmoid(logit_w.clamp(-lim, lim)).masked_fill_(logit_w <= -lim, 0.0)

        delta = torch.maximum((p_new - p).abs().amax(-1), (q_new - q).abs().amax(-1))
        done_now = active & (delta <= tol) if it > 0 else torch.zeros_like(active)
        keep = active.unsqueeze(-1)
        p, q = torch.where(keep, p_new, p), torch.where(keep, q_new, q)
        w = torch.where(keep, w_new, w)
        iterations = iterations + active.long()
        converged = converged | done_now
        active = active & ~done_now
        if (it + 1) % check_every == 0 and not bool(active.any()):
            break
    return StapleResult(
        probability=torch.gather(w, 1, inverse).reshape(b, *spatial),
        sensitivity=p,
        specificity=q,
        prior=prior,
        iterations=iterations,
        converged=converged,
    )


def mean_threshold(masks: torch.Tensor, threshold: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean over raters, then ``mean >= threshold``; ``masks`` ``(B, R, *spatial)`` in [0, 1], binary or soft.

    Returns ``(fused (B, *spatial) float {0, 1}, mean (B, *spatial) float)``.
    """
    _check(masks)
    mean = masks.float().mean(1)
    return (mean >= threshold).float(), mean


def majority_vote(masks: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Strict majority: foreground where more than half of the ``R`` raters say so (a tie is background).

    ``masks`` ``(B, R, *spatial)`` in {0, 1}. Returns ``(fused (B, *spatial) float {0, 1}, vote fraction)``.
    """
    _check(masks)
    votes = (masks > 0.5).sum(1)
    r = masks.shape[1]
    return (2 * votes > r).float(), votes.float() / r


def fuse(
    kind: Fusion | str,
    masks: torch.Tensor,
    *,
    soft: torch.Tensor | None = None,
    threshold: float = 0.5,
    max_iter: int = 100,
    tol: float = 1e-7,
    labels: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fuse ``masks`` ``(B, R, *spatial)`` with ``kind`` (staple | mean | vote).

    ``labels == 1`` (binary, the default): ``masks`` in {0, 1}; ``mean`` averages ``soft`` (same shape, in
    [0, 1]) when given, else the binary masks. Returns ``(fused (B, *spatial) float {0, 1}, consensus
    probability (B, *spatial) float32)``: STAPLE's posterior ``W``, the mean, or the vote fraction.

    ``labels == L > 1``: ``masks`` are label maps of atoms ``0..L`` (integer) and ``inference.label_fusion``
    fuses them: ``staple`` is ``label_staple``, ``mean`` is ``mean_argmax`` (of ``soft`` ``(B, R, L + 1,
    *spatial)`` when given, else of the one-hot label maps), ``vote`` is ``plurality_vote``; ``threshold`` is
    not used. Returns ``(fused (B, *spatial) int64 atoms, probability (B, L + 1, *spatial) float32)``: the
    posterior, the mean, or the label frequencies.
    """
    kind = Fusion.parse(kind)
    if labels != 1:
        from diffuseg.inference import label_fusion  # it imports rater_patterns from here

        return label_fusion.fuse_labels(kind, masks, labels, soft=soft, max_iter=max_iter, tol=tol)
    if kind is Fusion.STAPLE:
        result = staple(masks, max_iter=max_iter, tol=tol)
        return result.mask(threshold).float(), result.probability.float()
    if kind is Fusion.MEAN:
        return mean_threshold(masks if soft is None else soft, threshold)
    return majority_vote(masks)
