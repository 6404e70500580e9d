"""FF-Parser: a learnable frequency filter on a feature map (MedSegDiff, section 2.2, eqs. 4-6).

    M = F[m] (eq. 4),   M' = A * M (eq. 5),   m' = F^-1[M'] (eq. 6)

with F the 2D FFT over space and A a learnable complex map per channel.

Any feature size. The official code stores A at the one spectrum size of a 256-px input and fails at any
other. Here A is a function of *normalised frequency*: it is stored on a reference grid of
``ref_size = (h, w)`` (spectrum ``h x (w // 2 + 1)``, the real-input half of the FFT, which is all a
real feature needs since its spectrum is Hermitian) and sampled bilinearly at the frequencies of the actual
feature. For a feature of size H x W, row frequency k/H (k in fftshift order, -H/2 .. H/2-1) and column
frequency j/W (j = 0 .. W/2) are mapped to the same normalised frequencies on the reference grid. Rows wrap
around (frequency f is f - 1: between the highest positive and the lowest negative stored row the map is
interpolated across the Nyquist frequency); columns beyond the last stored one (odd reference widths) take
its value. At the reference size this is exactly the stored map (eq. 5 verbatim);
at other sizes the filter keeps its meaning (the same low-pass or high-pass shape in cycles per pixel), so
a network trained at 256 px filters a 320-px input the same way. Real and imaginary parts are separate real
parameters, initialised to 1 and 0, so the layer starts as the identity.

The FFT runs in float32 (bf16 FFTs are not available on CPU) on contiguous planes, and the result is cast back to
the input's dtype and memory format.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn


class FFParser(nn.Module):
    """Learnable complex filter in Fourier space. forward: (B, F, H, W) -> (B, F, H, W), F = ``channels``, any
    H, W >= 1.

    ``ref_size``: the feature size (h, w) at which the filter is stored one weight per frequency
    (2 * F * h * (w // 2 + 1) parameters).
    """

    def __init__(self, channels: int, ref_size: tuple[int, int]):
        super().__init__()
        h, w = ref_size
        self.ref_size = (int(h), int(w))
        self.weight_real = nn.Parameter(torch.ones(channels, h, w // 2 + 1))
        self.weight_imag = nn.Parameter(torch.zeros(channels, h, w // 2 + 1))
        self._cached: tuple[tuple, torch.Tensor] | None = None  # (key, filter) for calls without autograd

    def filter(self, height: int, width: int) -> torch.Tensor:
        """The complex map A for a feature of size height x width: (F, height, width // 2 + 1) complex64.

        Rows are in FFT order (frequency 0 first), as ``torch.fft.rfft2`` returns them. Without autograd
        (sampling) the map is kept and reused until the size or the weights change (any in-place update,
        e.g. an optimiser, EMA or ``load_state_dict``, bumps the weights' version counter).
        """
        if torch.is_grad_enabled():
            return self._compute_filter(height, width)
        weights = (self.weight_real, self.weight_imag)
        key = (height, width, *((p.data_ptr(), p._version, p.device) for p in weights))
        if self._cached is None or self._cached[0] != key:
            self._cached = (key, self._compute_filter(height, width))
        return self._cached[1]

    def _compute_filter(self, height: int, width: int) -> torch.Tensor:
        stored = torch.stack([self.weight_real, self.weight_imag], dim=0).float()  # (2, F, h, w//2+1)
        if (height, width) != self.ref_size:
            stored = self._resample(stored, height, width)
        return torch.complex(stored[0], stored[1])

    def _resample(self, stored: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """Bilinear sampling of the stored map at the normalised frequencies of a height x width feature."""
        h, w = self.ref_size
        dev = stored.device
        # Rows: actual frequency k / height, k in fftshift order; position on the shifted reference grid, which
        # is padded by one row at each end with the opposite end's row (row frequencies are periodic, so the
        # row after the highest positive frequency is the lowest negative one, e.g. Nyquist -0.5 = +0.5).
        k = torch.arange(height, device=dev, dtype=torch.float32) - height // 2
        row_pos = k / height * h + h // 2 + 1
        # Columns: j / width for j = 0 .. width // 2, position j / width * w on the (unshifted) half grid.
        col_pos = torch.arange(width // 2 + 1, device=dev, dtype=torch.float32) / width * w
        gy = 2.0 * row_pos / (h + 1) - 1.0
        gx = 2.0 * col_pos / max(w // 2, 1) - 1.0
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (height, width//2+1, 2) as (x, y)
        shifted = torch.fft.fftshift(stored, dim=-2).flatten(0, 1)[None]  # (1, 2F, h, w//2+1)
        shifted = torch.cat([shifted[..., -1:, :], shifted, shifted[..., :1, :]], dim=-2)  # periodic rows
        out = F.grid_sample(shifted, grid[None], mode="bilinear", padding_mode="border", align_corners=True)
        out = torch.fft.ifftshift(out[0], dim=-2)
        return out.unflatten(0, (2, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        # meta tensors (shape checks, ``methods.check_image_size``) have no autocast state to switch off
        off = contextlib.nullcontext() if x.is_meta else torch.autocast(device_type=x.device.type, enabled=False)
        with off:
            # the FFT runs along contiguous rows: a channels_last feature is converted in one pass, cheaper than
            # an FFT over its strided planes or a dtype cast followed by a layout copy (docs/benchmarks.md)
            planes = x.to(torch.float32, memory_format=torch.contiguous_format)
            spectrum = torch.fft.rfft2(planes, norm="ortho")  # eq. 4
            spectrum = spectrum * self.filter(height, width)  # eq. 5
            out = torch.fft.irfft2(spectrum, s=(height, width), norm="ortho")  # eq. 6
        if out.dtype == x.dtype and x.is_contiguous():
            return out
        return torch.empty_like(x).copy_(out)  # x's dtype and memory format
