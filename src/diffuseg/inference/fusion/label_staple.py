"""Multi-label STAPLE: the consensus of several label maps of one case (binary masks: ``fusion.staple``).

A label map holds atoms ``0..L`` (0 = background; ``labels.LabelScheme`` maps label values to atoms).
Batched over cases: ``atoms`` is ``(B, R, *spatial)`` integer with ``R`` raters (ensemble members or
annotators) per case; it runs on the input's device. With ``L = 1`` it gives what the binary ``fusion.staple``
gives (``W = 0.5`` aside, see below); ``fusion.fuse`` keeps binary calls on the binary one.

Multi-label STAPLE follows Warfield, Zou & Wells, "Simultaneous Truth and Performance Level Estimation
(STAPLE)", IEEE TMI 23(7), 2004, its extension to several labels (the multi-class EM): one confusion matrix per rater,
``theta_j(s', s) = P(rater j says s' | true label s)``, and a prior ``f(s)``. Choices the paper leaves open:

- the prior ``f(s)`` is the frequency of label ``s`` over all raters and voxels (constant over space), as in
  ITK's ``MultiLabelSTAPLEImageFilter``; a label no rater uses has prior 0 and posterior 0 everywhere;
- the start (``init``): ``mean`` (default) sets ``W_i(s)`` to the fraction of raters saying ``s`` at voxel
  ``i`` and begins with the M-step, as the binary STAPLE here and ITK's binary ``STAPLEImageFilter`` do, so
  ``L = 1`` gives the binary STAPLE; ``vote`` starts from ITK's ``InitializeConfusionMatrixArrayFromVoting``:
  for each rater the histogram of (its label ``s'``, the plurality vote ``s``) over the voxels whose vote is
  not tied, normalised over ``s`` for each ``s'`` (ITK normalises rows, so this start is
  ``P(vote = s | rater says s')``, not a confusion matrix), then the E-step. The EM finds a local maximum
  of the likelihood: the two starts can end at different ones when the raters disagree much;
- it stops when no entry of any ``theta_j`` moved by more than ``tol`` in one iteration (ITK: ``< 1e-5`` by
  default, computed in float32), or after ``max_iter`` M-steps;
- an entry ``theta_j(s', s) = 0`` makes label ``s`` impossible wherever rater ``j`` says ``s'`` (exactly 0,
  kept apart from the log-likelihood sums, as ITK's products give); a column ``s`` no voxel supports (all
  ``W(s) = 0``) becomes all zero, as in ITK; a voxel where every label is impossible takes no part in the
  M-step (ITK) and gets the raters' label frequencies as its posterior (ITK marks it undecided);
- the fused label is the argmax of the posterior, ties to the lowest label (ITK gives them its undecided
  label, ``L + 1`` by default). At ``L = 1`` a posterior of exactly 0.5 is background here and foreground in
  the binary ``StapleResult.mask``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from diffuseg.enums import StapleInit
from diffuseg.inference.fusion.raters import check_atoms, distinct_columns, first_argmax, one_hot


@dataclass(frozen=True)
class LabelStapleResult:
    """Multi-label STAPLE output for ``B`` cases with ``R`` raters and labels ``0..L``.

    ``probability``: ``(B, L + 1, *spatial)`` posterior ``W_i(s)`` (the last E-step);
    ``confusion``: ``(B, R, L + 1, L + 1)`` the final ``theta_j(s', s)``, rater label ``s'`` (rows) given the
    true label ``s`` (columns); ``prior``: ``(B, L + 1)``; ``iterations``: ``(B,)`` M-steps run;
    ``converged``: ``(B,)`` whether the tolerance was met.
    """

    probability: torch.Tensor
    confusion: torch.Tensor
    prior: torch.Tensor
    iterations: torch.Tensor
    converged: torch.Tensor

    def labels(self) -> torch.Tensor:
        """``(B, *spatial)`` int64: the most probable label, ties to the lowest."""
        return first_argmax(self.probability, 1)


def _vote_start(counts: torch.Tensor, d: torch.Tensor, weight: torch.Tensor, b: int, r: int) -> torch.Tensor:
    """ITK's start: per rater the (rater label, untied vote) histogram, each row normalised. ``counts``
    ``(B, S, U)`` raters per label, ``d`` ``(B, R * S, U)`` one-hot patterns -> ``(B, R, S, S)``."""
    s = counts.shape[1]
    top = counts.amax(1, keepdim=True)
    winners = counts == top
    untied = (winners.sum(1) == 1).to(d.dtype)
    vote = winners.to(d.dtype) * (weight * untied).unsqueeze(1)  # (B, S, U)
    hist = torch.bmm(d, vote.transpose(1, 2)).view(b, r, s, s)
    rows = hist.sum(-1, keepdim=True)
    return torch.where(rows > 0, hist / rows.clamp_min(1), torch.zeros_like(hist))


def _m_step(w: torch.Tensor, d: torch.Tensor, weight: torch.Tensor, b: int, r: int) -> torch.Tensor:
    """M-step: ``theta_j(s', s) = sum_i W_i(s) [D_ij = s'] / sum_i W_i(s)``; an unsupported column is 0."""
    s = w.shape[1]
    num = torch.bmm(d, (w * weight.unsqueeze(1)).transpose(1, 2)).view(b, r, s, s)
    col = num.sum(2, keepdim=True)
    return torch.where(col > 0, num / col.clamp_min(torch.finfo(num.dtype).tiny), torch.zeros_like(num))


def _e_step(theta: torch.Tensor, log_prior: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    """E-step: ``W_i(s) ∝ f(s) prod_j theta_j(D_ij, s)``, normalised over ``s``, in log space; zero factors are
    counted apart so that they give exactly 0. A voxel with no possible label gets ``W = 0``. -> ``(B, S, U)``."""
    b, r, s, _ = theta.shape
    zero = theta == 0
    log_theta = torch.log(torch.where(zero, torch.ones_like(theta), theta)).view(b, r * s, s)
    ll = torch.bmm(log_theta.transpose(1, 2), d) + log_prior.nan_to_num(neginf=0.0).unsqueeze(-1)
    impossible = torch.bmm(zero.to(d.dtype).view(b, r * s, s).transpose(1, 2), d) > 0
    impossible = impossible | torch.isinf(log_prior).unsqueeze(-1)
    ll = ll.masked_fill(impossible, -math.inf)
    top = ll.amax(1, keepdim=True)
    w = torch.exp(ll - torch.where(torch.isinf(top), torch.zeros_like(top), top))
    total = w.sum(1, keepdim=True)
    return torch.where(total > 0, w / total.clamp_min(torch.finfo(w.dtype).tiny), torch.zeros_like(w))


def label_staple(
    atoms: torch.Tensor,
    labels: int,
    *,
    max_iter: int = 100,
    tol: float = 1e-7,
    init: StapleInit | str = StapleInit.MEAN,
    dtype: torch.dtype = torch.float64,
) -> LabelStapleResult:
    """Multi-label STAPLE (Warfield, Zou & Wells 2004, several labels) of ``atoms`` ``(B, R, *spatial)`` with
    values ``0..labels``, batched over ``B``; the choices left open are in the module docstring.

    As the binary ``fusion.staple``, the EM runs over each case's distinct columns of votes (weighted by how
    many voxels have them), each iteration is a few batched matrix products in ``dtype``, and a case that has
    converged is frozen while the others go on, so a case's result does not depend on its batch. ``max_iter``
    counts M-steps (with ``init="vote"`` ITK's iterations, each one E-step and one M-step).

    Args:
        atoms: ``(B, R, *spatial)`` integer label maps of atoms ``0..labels``.
        labels: L, the number of foreground atoms (``LabelScheme.atoms``).
        max_iter: M-steps at most.
        tol: stop when no entry of any ``theta_j`` moved by more than this in one iteration.
        init: the start, ``mean`` or ``vote`` (module docstring).
        dtype: the dtype the EM runs in.
    """
    init = StapleInit.parse(init)
    atoms = check_atoms(atoms, labels)
    if max_iter < 1:
        raise ValueError("max_iter must be >= 1")
    b, r = atoms.shape[:2]
    spatial, s = atoms.shape[2:], labels + 1
    hot = one_hot(atoms.reshape(b, r, -1), labels, 2).reshape(b, r * s, -1)  # (B, R * S, N)
    n = hot.shape[-1]
    d, weight, inverse = distinct_columns(hot, dtype)  # (B, R * S, U), (B, U), (B, N)

    counts = d.view(b, r, s, -1).sum(1)  # (B, S, U) raters per label
    freq = counts / r
    prior = (freq * weight.unsqueeze(1)).sum(-1) / n  # (B, S)
    log_prior = torch.log(prior)
    tol = max(tol, 4 * torch.finfo(dtype).eps)
    if init is StapleInit.MEAN:
        theta, loops = _m_step(freq, d, weight, b, r), max_iter - 1
    else:
        theta, loops = _vote_start(counts, d, weight, b, r), max_iter
    active = torch.ones(b, dtype=torch.bool, device=d.device)
    converged = torch.zeros_like(active)
    iterations = torch.full((b,), int(init is StapleInit.MEAN), dtype=torch.long, device=d.device)
    for _ in range(loops):
        theta_new = _m_step(_e_step(theta, log_prior, d), d, weight, b, r)
        done_now = active & ((theta_new - theta).abs().flatten(1).amax(-1) <= tol)
        theta = torch.where(active.view(b, 1, 1, 1), theta_new, theta)
        iterations = iterations + active.long()
        converged = converged | done_now
        active = active & ~done_now
        if not bool(active.any()):
            break
    w = _e_step(theta, log_prior, d)
    w = torch.where(w.sum(1, keepdim=True) > 0, w, freq)  # no possible label: the raters' frequencies
    probability = torch.gather(w, 2, inverse.unsqueeze(1).expand(b, s, n)).reshape(b, s, *spatial)
    return LabelStapleResult(
        probability=probability, confusion=theta, prior=prior, iterations=iterations, converged=converged
    )
