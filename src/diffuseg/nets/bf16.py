"""Networks computed in bf16 from the first layer to the last, for sampling: weights cast once, no autocast.

Under bf16 autocast every convolution casts its float32 weight on each call, and on a CPU autocast keeps
GroupNorm in float32, so each (GroupNorm, SiLU, conv) block converts its activation to float32 and back. In a
bf16 network GroupNorm reads bf16 and accumulates its statistics in float32 inside the kernel, and the only
conversions left are the inputs, the output and the FF-Parser (its FFT and filter stay float32: there is no
bf16 FFT on a CPU). SiLUs that follow a GroupNorm work in place (sampling has no autograd). The timings are in
docs/benchmarks.md.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from diffuseg.nets.ffparser import FFParser
from diffuseg.nets.medsegdiff import MedSegDiff
from diffuseg.nets.medsegdiff_segmenter import MedSegDiffSegmenter
from diffuseg.nets.unet import DiffusionUNet, SegmentationUNet

WHOLE_BF16 = (MedSegDiff, MedSegDiffSegmenter, DiffusionUNet, SegmentationUNet)
"""Networks called as ``net(*tensors)`` whose every layer takes bf16 (the latent-variable and anchored networks
draw through their own methods and keep autocast)."""


class Bf16Network(nn.Module):
    """A bf16 copy of ``net`` (one of ``WHOLE_BF16``) for sampling.

    forward(*inputs) -> the network's output in float32. Inputs with spatial axes (B, C, H, W) are cast to bf16;
    times (B,) stay float32, as the time embedding's sinusoids need them (``blocks.sinusoidal_embedding``).
    """

    def __init__(self, net: nn.Module):
        super().__init__()
        with torch.inference_mode(False):  # parameters that track versions (``FFParser.filter``'s cache)
            self.net = copy.deepcopy(net)
            kept = {id(p) for m in self.net.modules() if isinstance(m, FFParser) for p in m.parameters()}
            for tensor in [*self.net.parameters(), *self.net.buffers()]:
                if id(tensor) not in kept and tensor.is_floating_point():
                    tensor.data = tensor.data.to(torch.bfloat16)
        for module in self.net.modules():
            if isinstance(module, nn.Sequential):
                for before, layer in zip(module, list(module)[1:]):
                    if isinstance(before, nn.GroupNorm) and isinstance(layer, nn.SiLU):
                        layer.inplace = True  # the GroupNorm's output is new; the shared time embedding is not

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        cast = [x.to(torch.bfloat16) if x.dim() == 4 and x.is_floating_point() else x for x in inputs]
        with torch.autocast(inputs[0].device.type, enabled=False):
            return self.net(*cast).float()
