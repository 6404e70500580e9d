"""Prediction types eps, x, v and logits, and exact conversions among them (the ambiguity paper, section 3.3).

With z = alpha x + sigma eps and alpha^2 + sigma^2 = 1 (Salimans & Ho 2022):
    v = alpha eps - sigma x,   x = alpha z - sigma v,   eps = sigma z + alpha v,
    x = (z - sigma eps) / alpha,   eps = (z - alpha x) / sigma.
``logits``: the network outputs per-channel logits of the mask and x = 2 p - 1 with p their sigmoid, or their
softmax over the C + 1 channels of exclusive classes (Fu et al. 2023, arXiv:2303.06040); it has no regression
target: it trains with Dice + CE (``process``). ``alpha`` and ``sigma`` broadcast against the tensors (scalars or
shape (B, 1, 1, 1)).
"""

from __future__ import annotations

import torch
from torch import Tensor

from diffuseg.enums import PredictionType


def logits_to_x0(logits: Tensor, exclusive: bool) -> Tensor:
    """(B, C, H, W) logits -> x in [-1, 1]: 2 p - 1, p = softmax over C when ``exclusive`` and C > 1, else sigmoid."""
    p = torch.softmax(logits, dim=1) if exclusive and logits.shape[1] > 1 else torch.sigmoid(logits)
    return 2.0 * p - 1.0


def target(kind: PredictionType, x0: Tensor, eps: Tensor, alpha, sigma) -> Tensor:
    """What a network of prediction type ``kind`` should output for z = alpha x0 + sigma eps.

    Args:
        kind: the network's prediction type.
        x0: the data x, in {-1, 1}.
        eps: the noise, shaped like x0.
        alpha: alpha_t, a scalar or broadcasting against x0.
        sigma: sigma_t, likewise.
    """
    if kind == PredictionType.EPS:
        return eps
    if kind == PredictionType.X:
        return x0
    if kind == PredictionType.V:
        return alpha * eps - sigma * x0
    raise ValueError(f"prediction type {kind!r} has no regression target")


def to_x0(kind: PredictionType, pred: Tensor, z: Tensor, alpha, sigma, exclusive: bool = False) -> Tensor:
    """The data estimate x_hat implied by a prediction of type ``kind`` at z.

    Args:
        kind: the network's prediction type.
        pred: the network's output, shaped like z.
        z: z_t, the noisy input.
        alpha: alpha_t, a scalar or broadcasting against z.
        sigma: sigma_t, likewise.
        exclusive: for ``logits``, a softmax over the channels instead of a sigmoid (``logits_to_x0``).
    """
    if kind == PredictionType.EPS:
        return (z - sigma * pred) / alpha
    if kind == PredictionType.X:
        return pred
    if kind == PredictionType.V:
        return alpha * z - sigma * pred
    if kind == PredictionType.LOGITS:
        return logits_to_x0(pred, exclusive)
    raise ValueError(f"unknown prediction type {kind!r}")


def to_eps(kind: PredictionType, pred: Tensor, z: Tensor, alpha, sigma, exclusive: bool = False) -> Tensor:
    """The noise estimate eps_hat implied by a prediction of type ``kind`` at z.

    Args:
        kind: the network's prediction type.
        pred: the network's output, shaped like z.
        z: z_t, the noisy input.
        alpha: alpha_t, a scalar or broadcasting against z.
        sigma: sigma_t, likewise.
        exclusive: for ``logits``, a softmax over the channels instead of a sigmoid (``logits_to_x0``).
    """
    if kind == PredictionType.EPS:
        return pred
    if kind == PredictionType.V:
        return sigma * z + alpha * pred
    return (z - alpha * to_x0(kind, pred, z, alpha, sigma, exclusive)) / sigma


def to_v(kind: PredictionType, pred: Tensor, z: Tensor, alpha, sigma, exclusive: bool = False) -> Tensor:
    """The velocity estimate v_hat = alpha eps_hat - sigma x_hat implied by a prediction of type ``kind``.

    Args:
        kind: the network's prediction type.
        pred: the network's output, shaped like z.
        z: z_t, the noisy input.
        alpha: alpha_t, a scalar or broadcasting against z.
        sigma: sigma_t, likewise.
        exclusive: for ``logits``, a softmax over the channels instead of a sigmoid (``logits_to_x0``).
    """
    if kind == PredictionType.V:
        return pred
    x_hat = to_x0(kind, pred, z, alpha, sigma, exclusive)
    return alpha * to_eps(kind, pred, z, alpha, sigma, exclusive) - sigma * x_hat
