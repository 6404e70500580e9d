"""Test-time augmentation over the 8 symmetries of the square (the dihedral group of flips, transposes and
90-degree turns), each with its inverse, for images and maps (..., H, W).

Transform ``t`` (0-7) transposes the last two axes when ``t >= 4``, then flips the width axis when bit 1 of ``t``
is set and the height axis when bit 2 is: 0 identity, 1 left-right flip, 2 up-down flip, 3 half turn, 4 transpose,
5 and 6 the quarter turns, 7 anti-transpose. The first four are the flips, defined for any H and W; the last four
need a square (the model input is ``data.image_size`` square, ``transforms.model_input``). A prediction with
``sample.tta`` draws member k from the image under transform ``k mod 8`` and maps its mask and soft maps back
(``inference.ensemble``), so the members' disagreement is the network's sensitivity to the transforms: test-time
augmentation as an estimate of aleatoric uncertainty (Wang et al., Neurocomputing 335, 2019, arXiv:1807.07356).
"""

from __future__ import annotations

from torch import Tensor

TRANSFORMS = 8
"""The symmetries of the square; member k of a case uses transform ``k mod TRANSFORMS``."""


def _flips(t: int) -> list[int]:
    return [axis for axis, bit in ((-1, 1), (-2, 2)) if t & bit]


def _check(x: Tensor, t: int) -> None:
    if not 0 <= t < TRANSFORMS:
        raise ValueError(f"transform {t}: expected 0 .. {TRANSFORMS - 1}")
    if t >= 4 and x.shape[-1] != x.shape[-2]:
        raise ValueError(f"transform {t} transposes, which needs a square image, got {tuple(x.shape[-2:])}")


def dihedral(x: Tensor, t: int) -> Tensor:
    """``x`` (..., H, W) under transform ``t`` (module docstring): (..., W, H) when ``t >= 4``, else (..., H, W)."""
    _check(x, t)
    y = x.transpose(-1, -2) if t >= 4 else x
    return y.flip(_flips(t)) if t % 4 else y


def undo(y: Tensor, t: int) -> Tensor:
    """The inverse of ``dihedral(., t)``: ``undo(dihedral(x, t), t) == x``."""
    _check(y, t)
    x = y.flip(_flips(t)) if t % 4 else y
    return x.transpose(-1, -2) if t >= 4 else x
