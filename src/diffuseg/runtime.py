"""The machine as diffuseg uses it: how many CPU threads torch gets, and whether the device computes bf16.

Threads for train, predict and demo follow a policy that cannot stall.

OpenMP threads of one torch operator wait for each other at its end, so a thread whose core is busy with
another process holds up every other thread, and a call on more threads than idle cores runs slower than on
fewer (measurements: docs/benchmarks.md, "Measurements behind design choices"). The policy:

1. ``--threads N`` when given;
2. else ``OMP_NUM_THREADS`` when set (the usual way to choose it for any OpenMP program);
3. else one thread per idle core: the cores this process may run on (``os.sched_getaffinity``) minus the
   other work, rounded, at least 1. The other work is the larger of the 1-minute load average
   (``os.getloadavg``) and the cores busy right now (``/proc/stat`` over 0.1 s, where there is one), since the
   load average lags a job that started seconds ago. On a quiet 2-core machine that is 2 threads; as soon as
   about half a core's worth of other work runs, 1.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import time
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path

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

    ``cpu_count``: cores this process may use; ``load``: cores' worth of other work (``use_threads``: the
    larger of the 1-minute load average and ``busy_cores``).
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


def load_averages() -> tuple[float, float, float] | None:
    """The 1-, 5- and 15-minute load averages, or None where the system does not report them."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def load_average() -> float:
    """The 1-minute load average, or 0 where the system does not report one."""
    loads = load_averages()
    return loads[0] if loads else 0.0


def _cpu_times(text: str) -> tuple[int, int]:
    """(busy, total) jiffies from the first (all-CPU) line of ``/proc/stat``: idle and iowait are not busy."""
    values = [int(v) for v in text.split("\n", 1)[0].split()[1:]]
    total = sum(values[:8])  # user nice system idle iowait irq softirq steal (guest is inside user)
    return total - values[3] - (values[4] if len(values) > 4 else 0), total


def busy_cores(read: Callable[[], str] | None = None, interval: float = 0.1, cores: int | None = None) -> float:
    """Cores' worth of work running now: the busy share of all CPUs' time over ``interval`` seconds times the
    CPU count (``read`` gives ``/proc/stat``'s text); 0 where there is no ``/proc/stat``."""
    read = read or (lambda: Path("/proc/stat").read_text())
    try:
        busy0, total0 = _cpu_times(read())
        time.sleep(interval)
        busy1, total1 = _cpu_times(read())
    except (OSError, ValueError, IndexError):
        return 0.0
    share = (busy1 - busy0) / (total1 - total0) if total1 > total0 else 0.0
    return share * (cores or os.cpu_count() or 1)


# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest: blocks below it come from the heap and are reused
TRIM_THRESHOLD = 1 << 30  # free memory at the heap's top kept for the next call instead of returned
TOP_PAD = 64 << 20


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse freed tensor memory instead of returning it to the OS; True where it applied.

    By default glibc maps blocks above a threshold (128 KiB, raised only to the size of the last such block freed)
    afresh and trims the heap's free top, so a network call's activations keep landing on new pages that the
    kernel must zero (the measurements: docs/benchmarks.md).
    The same settings as glibc's ``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` and ``MALLOC_TOP_PAD_``,
    set from inside the process: what PyTorch's CPU performance tuning guide gets by swapping in jemalloc or
    tcmalloc, which keep freed memory. Elsewhere than glibc (musl, macOS) nothing changes."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    settings = ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_TOP_PAD, TOP_PAD))
    return all([mallopt(key, value) == 1 for key, value in settings])  # each applied, even after one fails


def use_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads by ``choose_threads`` for a run on the CPU; returns the count. With a CUDA
    GPU and no ``requested`` value, torch's own default is left alone (the CPU only feeds the GPU). Freed
    memory is kept for reuse (``keep_freed_memory``) either way."""
    keep_freed_memory()
    if requested is None and torch.cuda.is_available():
        return torch.get_num_threads()
    needs_load = requested is None and not os.environ.get("OMP_NUM_THREADS", "").strip()
    load = max(load_average(), busy_cores()) if needs_load else 0.0
    n = choose_threads(requested, os.environ, usable_cores(), load)
    torch.set_num_threads(n)
    return n


def cpu_flags() -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes bf16 in hardware: a CUDA GPU that supports it, or a CPU with AVX512-BF16 or
    AMX-BF16. Elsewhere oneDNN emulates bf16 convolutions, far slower than fp32 (docs/benchmarks.md).

    On a CPU, torch's own check (cpuinfo, which also asks whether the OS saves the AVX-512 state) decides; where
    torch lacks it, the ``avx512_bf16`` / ``amx_bf16`` flags of /proc/cpuinfo do."""
    device = torch.device(device)
    if device.type == "cuda":  # without emulation: pre-Ampere GPUs "support" bf16 only by emulating it
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        avx512 = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
        if avx512 is not None and amx is not None:
            return bool(avx512() or amx())
        return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
    return False


def resolve_sample_precision(precision: str, device: torch.device | str) -> str:
    """``sample.precision`` as it runs on ``device``: ``auto`` is ``bf16`` where ``native_bf16``, else ``32``.
    ``bf16`` asked for where it is only emulated still runs, after a warning that it is slow."""
    if precision == "auto":
        return "bf16" if native_bf16(device) else "32"
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(
            f"sample.precision=bf16: this {torch.device(device).type} has no native bf16, so bf16 is emulated "
            "and sampling runs many times slower than in fp32; use sample.precision=auto or 32",
            stacklevel=2,
        )
    return precision


def samples_in_bf16(device: torch.device, precision: str) -> bool:
    """Whether sampling on ``device`` computes in bf16: ``sample.precision`` ``bf16``, or ``auto`` where
    ``native_bf16``."""
    return precision == "bf16" or (precision == "auto" and native_bf16(device))


def sampling_precision(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on ``device`` where ``samples_in_bf16``, else nothing (fp32). Networks sampled in bf16 end
    to end (``nets.bf16``) switch it off inside."""
    if samples_in_bf16(device, precision):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
