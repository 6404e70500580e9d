"""Prediction types eps, x and v, and exact conversions among them (the ambiguity paper, section 3.3).

With z = alpha x + sigma eps and alpha^2 + sigma^2 = 1 (Salimans & Ho 2022):
    v = alpha eps - sigma x,   x = alpha z - sigma v,   eps = sigma z + alpha v,
    x = (z - sigma eps) / alpha,   eps = (z - alpha x) / sigma.
``alpha`` and ``sigma`` broadcast against the tensors (scalars or shape (B, 1, 1, 1)).
"""

from __future__ import annotations

from torch import Tensor

from diffuseg.enums import PredictionType


def target(kind: PredictionType, x0: Tensor, eps: Tensor, alpha, sigma) -> Tensor:
    """What a network of prediction type ``kind`` should output for z = alpha x0 + sigma eps."""
    if kind == PredictionType.EPS:
        return eps
    if kind == PredictionType.X:
        return x0
    if kind == PredictionType.V:
        return alpha * eps - sigma * x0
    raise ValueError(f"unknown prediction type {kind!r}")


def to_x0(kind: PredictionType, pred: Tensor, z: Tensor, alpha, sigma) -> Tensor:
    """The data estimate x_hat implied by a prediction of type ``kind`` at z."""
    if kind == PredictionType.EPS:
        return (z - sigma * pred) / alpha
    if kind == PredictionType.X:
        return pred
    if kind == PredictionType.V:
        return alpha * z - sigma * pred
    raise ValueError(f"unknown prediction type {kind!r}")


def to_eps(kind: PredictionType, pred: Tensor, z: Tensor, alpha, sigma) -> Tensor:
    """The noise estimate eps_hat implied by a prediction of type ``kind`` at z."""
    if kind == PredictionType.EPS:
        return pred
    if kind == PredictionType.X:
        return (z - alpha * pred) / sigma
    if kind == PredictionType.V:
        return sigma * z + alpha * pred
    raise ValueError(f"unknown prediction type {kind!r}")


def to_v(kind: PredictionType, pred: Tensor, z: Tensor, alpha, sigma) -> Tensor:
    """The velocity estimate v_hat = alpha eps_hat - sigma x_hat implied by a prediction of type ``kind``."""
    if kind == PredictionType.V:
        return pred
    return alpha * to_eps(kind, pred, z, alpha, sigma) - sigma * to_x0(kind, pred, z, alpha, sigma)
