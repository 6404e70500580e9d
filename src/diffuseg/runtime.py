"""How many CPU threads torch uses for train, predict and demo: a policy that cannot stall.

OpenMP threads of one torch operator wait for each other at its end, so a thread whose core is busy with
another process holds up every other thread: on a 2-core machine with the other core busy, two threads made a
network call several times slower than one (docs/inference.md, "Threads"). The policy:

1. ``--threads N`` when given;
2. else ``OMP_NUM_THREADS`` when set (the usual way to choose it for any OpenMP program);
3. else one thread per idle core: the cores this process may run on (``os.sched_getaffinity``) minus the
   1-minute load average (``os.getloadavg``), rounded, at least 1. On a quiet 2-core machine that is 2; as
   soon as about half a core's worth of other work runs, 1.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from diffuseg.errors import UserError


def _positive(value: str | int, name: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise UserError(f"{name}={value!r}: expected a positive whole number of threads") from None
    if n < 1:
        raise UserError(f"{name}={value!r}: expected a positive whole number of threads")
    return n


def choose_threads(requested: int | None, env: Mapping[str, str], cpu_count: int, load: float) -> int:
    """Torch intra-op threads for a CPU run: ``requested`` if given, else ``env["OMP_NUM_THREADS"]`` if set
    and not empty, else ``round(cpu_count - load)`` clamped to ``[1, cpu_count]`` (idle cores).

    ``cpu_count``: cores this process may use; ``load``: the 1-minute load average (runnable processes).
    Raises ``UserError`` for a requested or OMP_NUM_THREADS value that is not a positive integer.
    """
    if requested is not None:
        return _positive(requested, "--threads")
    omp = env.get("OMP_NUM_THREADS", "").strip()
    if omp:
        return _positive(omp.split(",")[0], "OMP_NUM_THREADS")  # "4,2" (nested levels): the outer level
    cores = max(1, int(cpu_count))
    idle = round(cores - max(0.0, float(load)))
    return max(1, min(cores, idle))


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity), or ``os.cpu_count()`` where affinity is unknown."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> float:
    """The 1-minute load average, or 0 where the system does not report one."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return 0.0


def use_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads by ``choose_threads`` for a run on the CPU; returns the count. With a CUDA
    GPU and no ``requested`` value, torch's own default is left alone (the CPU only feeds the GPU)."""
    if requested is None and torch.cuda.is_available():
        return torch.get_num_threads()
    n = choose_threads(requested, os.environ, usable_cores(), load_average())
    torch.set_num_threads(n)
    return n
