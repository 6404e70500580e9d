"""Samplers: one algorithm per file, one signature.

``sample(kind, net, image, process, steps, *, generator, members=1, **options) -> SampleOutput``.
``generator`` is a ``torch.Generator`` or one generator per output row (B * members rows).
Options: ``spacing`` (linear or quadratic time grid), ``eta`` (DDIM), ``ddpm_variance`` (DDPM: posterior or
beta), ``threshold``, ``scheme`` (the ``LabelScheme`` of C classes; None: binary); a sampler ignores the options
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
    """Draw ``members`` masks per image with the sampler ``kind``."""
    fn = SAMPLERS[SamplerKind.parse(kind)]
    return fn(net, image, process, steps, generator=generator, members=members, **options)


__all__ = ["SAMPLERS", "SampleOutput", "sample"]
