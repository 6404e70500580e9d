"""Fusion of several label maps of one case: multi-label STAPLE, plurality vote, argmax of the mean one-hot,
and the uncertainty of the members' labels.

A label map holds atoms ``0..L`` (0 = background; ``labels.LabelScheme`` maps label values to atoms).
Fusion functions are batched over cases: ``atoms`` is ``(B, R, *spatial)`` integer with ``R`` raters
(ensemble members or annotators) per case; they run on the input's device. With ``L = 1`` (binary) every
function here gives what its binary counterpart in ``inference.fusion`` gives (ties and ``W = 0.5`` aside, see
each docstring); ``fusion.fuse`` keeps binary calls on the binary path.

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

from diffuseg.enums import Fusion, StapleInit, Uncertainty
from diffuseg.inference.fusion import rater_patterns


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
    """The fraction of members giving each label: ``(..., K, ...)`` with members at ``member_dim`` ->
    ``(..., L + 1, ...)`` float32, the label axis where the members were; sums to 1 over it."""
    atoms = check_atoms(atoms, labels, member_dim + 1)
    return one_hot(atoms, labels, member_dim + 1).float().mean(member_dim)


def first_argmax(values: torch.Tensor, dim: int) -> torch.Tensor:
    """Argmax over ``dim`` with ties to the lowest index (``torch.argmax`` does not promise which)."""
    dim = dim % values.dim()
    top = values.amax(dim, keepdim=True)
    index = torch.arange(values.shape[dim], device=values.device).view(-1, *([1] * (values.dim() - dim - 1)))
    return torch.where(values == top, index, values.shape[dim]).amin(dim)


def plurality_vote(atoms: torch.Tensor, labels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The label most raters give: ``atoms`` ``(B, R, *spatial)`` -> ``(fused (B, *spatial) int64, label
    frequencies (B, L + 1, *spatial) float32)``. A tie goes to the lowest tied label, so background wins every
    tie it is part of; at ``L = 1`` this is ``fusion.majority_vote`` (strict majority, a tie is background)."""
    freq = label_frequencies(atoms, labels, 1)
    return first_argmax(freq, 1), freq


def mean_argmax(
    atoms: torch.Tensor, labels: int, soft: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Argmax of the mean one-hot (or of the mean ``soft``): ``(fused (B, *spatial) int64, mean (B, L + 1,
    *spatial) float32)``, ties to the lowest label.

    ``soft`` ``(B, R, L + 1, *spatial)``: per-member probabilities over the atoms (exclusive classes: the
    network's softmax channels, channel 0 = background); without it the members' one-hot label maps are
    averaged, which makes this the plurality vote. Overlapping regions have no probability per atom: decode
    their mean soft channels with ``LabelScheme.decode`` instead."""
    if soft is None:
        return plurality_vote(atoms, labels)
    check_atoms(atoms, labels)
    if soft.shape[:2] != atoms.shape[:2] or soft.shape[2] != labels + 1 or soft.shape[3:] != atoms.shape[2:]:
        raise ValueError(
            f"soft {tuple(soft.shape)} does not match label maps {tuple(atoms.shape)} with {labels + 1} labels "
            "(expected (B, R, L + 1, *spatial))"
        )
    mean = soft.float().mean(1)
    return first_argmax(mean, 1), mean


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
    """
    init = StapleInit.parse(init)
    atoms = check_atoms(atoms, labels)
    if max_iter < 1:
        raise ValueError("max_iter must be >= 1")
    b, r = atoms.shape[:2]
    spatial, s = atoms.shape[2:], labels + 1
    hot = one_hot(atoms.reshape(b, r, -1), labels, 2).reshape(b, r * s, -1)  # (B, R * S, N)
    n = hot.shape[-1]
    found = [rater_patterns(hot[i]) for i in range(b)]
    u = max(c.numel() for _, c, _ in found)
    d = torch.zeros(b, r * s, u, dtype=dtype, device=atoms.device)
    weight = torch.zeros(b, u, dtype=dtype, device=atoms.device)
    for i, (pat, cnt, _) in enumerate(found):
        d[i, :, : cnt.numel()] = pat.to(dtype)
        weight[i, : cnt.numel()] = cnt.to(dtype)
    inverse = torch.stack([inv for _, _, inv in found])  # (B, N)

    counts = d.view(b, r, s, u).sum(1)  # (B, S, U) raters per label
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


def normalised_entropy(atoms: torch.Tensor, labels: int, member_dim: int = 0) -> torch.Tensor:
    """``-sum_s f(s) log f(s) / log(L + 1)`` of the members' label frequencies ``f``: ``atoms`` with the ``K``
    members at ``member_dim`` (``(K, *spatial)`` or ``(K, 1, H, W)``: 0) -> the map without that axis, float32
    in [0, 1]: 0 where all members agree, 1 where the ``L + 1`` labels are equally frequent (which needs
    ``K >= L + 1``). At ``L = 1`` it is the binary entropy in bits (``Uncertainty.ENTROPY`` of
    ``inference.ensemble.uncertainty_map``)."""
    f = label_frequencies(atoms, labels, member_dim)
    return (-torch.xlogy(f, f).sum(member_dim) / math.log(labels + 1)).clamp(0.0, 1.0)


def class_uncertainty(masks: torch.Tensor, kind: Uncertainty | str, member_dim: int = 0) -> torch.Tensor:
    """Per-class maps: the binary uncertainty ``kind`` of each class's member frequency ``f_k``. ``masks``
    ``(K, C_k, *spatial)`` class masks (bool, or {0, 1}) with members at ``member_dim`` (``LabelScheme.
    class_masks`` of each member, or ``one_hot`` for label maps) -> ``(C_k, *spatial)`` float32:
    ``variance`` ``f (1 - f)`` in [0, 0.25] or ``entropy`` ``-f log2 f - (1 - f) log2 (1 - f)`` in [0, 1]
    (bits). One class is exactly ``inference.ensemble.uncertainty_map`` of ``(K, 1, H, W)``."""
    m = masks if masks.dtype == torch.bool else (masks > 0.5 if masks.is_floating_point() else masks != 0)
    f = m.float().mean(member_dim)
    if Uncertainty.parse(kind) is Uncertainty.VARIANCE:
        return f * (1.0 - f)
    g = 1.0 - f
    return -(torch.xlogy(f, f) + torch.xlogy(g, g)) / math.log(2.0)


def fuse_labels(
    kind: Fusion | str,
    atoms: torch.Tensor,
    labels: int,
    *,
    soft: torch.Tensor | None = None,
    max_iter: int = 100,
    tol: float = 1e-7,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``fusion.fuse`` for label maps: ``atoms`` ``(B, R, *spatial)`` -> ``(fused (B, *spatial) int64,
    probability (B, L + 1, *spatial) float32)`` by ``label_staple``, ``mean_argmax`` or ``plurality_vote``."""
    kind = Fusion.parse(kind)
    if kind is Fusion.STAPLE:
        result = label_staple(atoms, labels, max_iter=max_iter, tol=tol)
        return result.labels(), result.probability.float()
    if kind is Fusion.MEAN:
        return mean_argmax(atoms, labels, soft)
    return plurality_vote(atoms, labels)
