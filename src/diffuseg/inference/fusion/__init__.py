"""Fusion of the raters of one case (ensemble members or annotators) into one mask: ``fuse``.

``fuse`` dispatches on the label scheme's number of foreground atoms ``L`` (``LabelScheme.atoms``): one atom
(binary masks, or one class of one label value) takes the binary algorithms, several atoms the label-map ones.
The algorithms, one module each: ``staple`` (binary STAPLE), ``label_staple`` (multi-label STAPLE), ``votes``
(majority / plurality vote, mean-and-threshold, argmax of the mean); ``raters`` holds what they share.
"""

from __future__ import annotations

import torch

from diffuseg.enums import Fusion
from diffuseg.inference.fusion import label_staple, staple, votes


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

    ``labels == 1`` (binary): ``staple`` is ``staple.staple`` thresholded at ``threshold``, ``mean`` is
    ``votes.mean_threshold`` of ``soft`` when given, else of the masks, ``vote`` is ``votes.majority_vote``.
    Returns ``(fused (B, *spatial) float {0, 1}, consensus probability (B, *spatial) float32)``: STAPLE's
    posterior ``W``, the mean, or the vote fraction.

    ``labels == L > 1``: ``staple`` is ``label_staple.label_staple``, ``mean`` is ``votes.mean_argmax`` (of
    ``soft`` when given, else of the one-hot label maps), ``vote`` is ``votes.plurality_vote``; ``threshold`` is
    not used. Returns ``(fused (B, *spatial) int64 atoms, probability (B, L + 1, *spatial) float32)``: the
    posterior, the mean, or the label frequencies.

    Args:
        kind: the fusion, ``staple``, ``mean`` or ``vote``.
        masks: ``(B, R, *spatial)``: binary masks in {0, 1} (``labels == 1``) or integer label maps of atoms
            ``0..labels``.
        soft: the raters' probabilities for ``mean``: ``(B, R, *spatial)`` in [0, 1] (``labels == 1``) or
            ``(B, R, L + 1, *spatial)``, one map per atom.
        threshold: the binary consensus is ``probability >= threshold``.
        max_iter: STAPLE's iterations at most.
        tol: STAPLE's convergence tolerance.
        labels: L, the number of foreground atoms of the label scheme.
    """
    kind = Fusion.parse(kind)
    if labels != 1:
        if kind is Fusion.STAPLE:
            result = label_staple.label_staple(masks, labels, max_iter=max_iter, tol=tol)
            return result.labels(), result.probability.float()
        if kind is Fusion.MEAN:
            return votes.mean_argmax(masks, labels, soft)
        return votes.plurality_vote(masks, labels)
    if kind is Fusion.STAPLE:
        result = staple.staple(masks, max_iter=max_iter, tol=tol)
        return result.mask(threshold).float(), result.probability.float()
    if kind is Fusion.MEAN:
        return votes.mean_threshold(masks if soft is None else soft, threshold)
    return votes.majority_vote(masks)
