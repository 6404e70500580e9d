"""The symmetries of the square, for tests that check a network or a transform treats the corners alike.

With flip-symmetric kernels (``symmetrise``) a network built from centred downsampling commutes with flips
and transposes; ``relative_error`` measures how far it is from doing so.
"""

from __future__ import annotations

import torch
from torch import nn

TRANSFORMS = {
    "flip_w": lambda x: x.flip(-1),
    "flip_h": lambda x: x.flip(-2),
    "rot180": lambda x: x.flip(-2, -1),
    "transpose": lambda x: x.transpose(-1, -2),
}


# the 7 symmetries of the square other than the identity
SYMMETRIES = (
    *TRANSFORMS.values(),
    lambda x: x.transpose(-1, -2).flip(-1, -2),  # anti-transpose
    lambda x: torch.rot90(x, 1, (-2, -1)),
    lambda x: torch.rot90(x, -1, (-2, -1)),
)


def symmetrise(net: nn.Module) -> nn.Module:
    """Average every spatial kernel over the 8 flips/turns of the square, so the kernels favour no side."""
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.Conv2d) and m.kernel_size[0] > 1:
                w = m.weight
                turns = [w, w.flip(-1), w.flip(-2), w.flip(-2, -1)]
                m.weight.copy_(sum(turns + [t.transpose(-1, -2) for t in turns]) / 8)
    return net


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a - b| / max |b|."""
    return float((a - b).abs().max() / b.abs().max())
