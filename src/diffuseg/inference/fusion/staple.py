"""Binary STAPLE: the consensus of several binary masks of one case (label maps: ``fusion.label_staple``).

Batched over cases: ``masks`` is ``(B, R, *spatial)`` with ``R`` raters (ensemble members or annotators) per
case, values in ``{0, 1}`` (bool, integer or float). It runs on the input's device.

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

from diffuseg.inference.fusion.raters import check_masks, distinct_columns


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

    Args:
        masks: ``(B, R, *spatial)`` raters' masks in {0, 1}.
        max_iter: EM iterations at most.
        tol: stop when no ``p_j`` or ``q_j`` moved by more than this in one iteration.
        dtype: the dtype the EM runs in.
        check_every: iterations between two convergence tests (each one a host synchronisation).
    """
    check_masks(masks)
    if max_iter < 1:
        raise ValueError("max_iter must be >= 1")
    b, r = masks.shape[:2]
    spatial = masks.shape[2:]
    flat = masks.reshape(b, r, -1)
    votes = flat > 0.5 if flat.is_floating_point() else flat != 0
    n = votes.shape[-1]
    d, weight, inverse = distinct_columns(votes, dtype)  # (B, R, U), (B, U), (B, N)

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
