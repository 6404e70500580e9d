"""Samplers: one algorithm per file, one signature.

``sample(kind, net, image, process, steps, *, generator, members=1, **options) -> SampleOutput``.
``generator`` is a ``torch.Generator`` or one generator per output row (B * K rows, K = ``members``).
Options: ``spacing`` (linear or quadratic time grid), ``eta`` (DDIM), ``ddpm_variance`` (DDPM: posterior or
beta), ``threshold``, ``scheme`` (the ``LabelScheme`` of the classes; None: binary); a sampler ignores the options
of the others, so one call site serves all three.
"""

from __future__ import annotations

from torch import Tensor

from diffuseg.diffusion.noise import Generators
from diffuseg.diffusion.process import DiffusionProcess, Network
from diffuseg.diffusion.samplers import ddim, ddpm, dpm_solver
from diffuseg.diffusion.samplers.base import SampleOutput
from diffuseg.enums import SamplerKind

SAMPLERS = {
    SamplerKind.DDPM: ddpm.sample,
    SamplerKind.DDIM: ddim.sample,
    SamplerKind.DPM_SOLVER: dpm_solver.sample,
}


def sample(
    kind: SamplerKind | str,
    net: Network,
    image: Tensor,
    process: DiffusionProcess,
    steps: int,
    *,
    generator: Generators,
    members: int = 1,
    **options: object,
) -> SampleOutput:
    """Draw K = ``members`` masks per image with the sampler ``kind``.

    Args:
        kind: ddpm, ddim or dpm_solver.
        net: the network ``net(x_t, t, image)``.
        image: (B, in_channels, H, W).
        process: the schedule and prediction type.
        steps: S, the network calls per member.
        generator: one generator, or one per output row (B * K).
        members: K, masks per image.
        **options: the samplers' options (module docstring).
    """
    fn = SAMPLERS[SamplerKind.parse(kind)]
    return fn(net, image, process, steps, generator=generator, members=members, **options)


__all__ = ["SAMPLERS", "SampleOutput", "sample"]
