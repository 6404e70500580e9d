"""The CPU thread policy: --threads, then OMP_NUM_THREADS, then one thread per idle core; bf16 where the device
computes it natively."""

from __future__ import annotations

import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from diffuseg import runtime
from diffuseg.errors import UserError
from diffuseg.runtime import choose_threads, native_bf16, resolve_sample_precision


@pytest.mark.parametrize(
    ("requested", "env", "cores", "load", "expected"),
    [
        (3, {"OMP_NUM_THREADS": "2"}, 2, 5.0, 3),  # --threads wins over everything, even oversubscribed
        (None, {"OMP_NUM_THREADS": "4"}, 2, 0.0, 4),  # the environment is honoured as given
        (None, {"OMP_NUM_THREADS": " 2,1 "}, 8, 0.0, 2),  # nested levels: the outer one
        (None, {}, 2, 0.0, 2),  # quiet 2-core machine: both cores
        (None, {}, 2, 0.4, 2),  # a little background noise does not cost a core
        (None, {}, 2, 0.6, 1),  # another job on one core: one thread
        (None, {}, 2, 1.0, 1),
        (None, {}, 2, 7.5, 1),  # far more work than cores: still one thread, never zero
        (None, {}, 16, 3.2, 13),  # many cores: the idle ones
        (None, {"OMP_NUM_THREADS": ""}, 4, 0.0, 4),  # set but empty counts as unset
        (None, {}, 0, 0.0, 1),  # a machine that reports no cores still gets a thread
        (None, {}, 4, -1.0, 4),  # never more threads than cores
    ],
)
def test_choose_threads(requested, env, cores, load, expected):
    assert choose_threads(requested, env, cores, load) == expected


@pytest.mark.parametrize(("requested", "env"), [(0, {}), (-2, {}), (None, {"OMP_NUM_THREADS": "many"}),
                                                (None, {"OMP_NUM_THREADS": "0"})])  # fmt: skip
def test_choose_threads_rejects_bad_counts(requested, env):
    with pytest.raises(UserError, match="positive whole number"):
        choose_threads(requested, env, 2, 0.0)


def test_use_threads_sets_torch(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    try:
        assert runtime.use_threads(2) == 2 and torch.get_num_threads() == 2
        assert runtime.use_threads() == 1 and torch.get_num_threads() == 1  # unless CUDA: then left alone
    finally:
        torch.set_num_threads(before)


def test_cli_rejects_bad_threads(capsys):
    from diffuseg.cli import main

    assert main(["predict", "missing.ckpt", "in", "out", "--threads", "0"]) == 2
    assert "--threads=0" in capsys.readouterr().err


def _stat(user: int, idle: int, iowait: int = 0) -> str:
    return f"cpu  {user} 0 0 {idle} {iowait} 0 0 0 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"


def test_busy_cores_from_proc_stat_over_an_interval():
    texts = iter([_stat(100, 100), _stat(150, 150)])  # half of all CPU time busy in between
    assert runtime.busy_cores(lambda: next(texts), interval=0, cores=2) == pytest.approx(1.0)
    texts = iter([_stat(100, 100, 50), _stat(100, 180, 70)])  # only idle and iowait: nothing busy
    assert runtime.busy_cores(lambda: next(texts), interval=0, cores=2) == 0.0


def test_busy_cores_without_proc_stat_is_zero():
    def missing() -> str:
        raise OSError("no /proc")

    assert runtime.busy_cores(missing, interval=0) == 0.0


def test_a_job_that_just_started_costs_a_thread(monkeypatch):
    """The load average still says 0, but one core is busy now: one thread, not two."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "load_average", lambda: 0.0)
    monkeypatch.setattr(runtime, "busy_cores", lambda: 1.0)
    monkeypatch.setattr(runtime, "usable_cores", lambda: 2)
    before = torch.get_num_threads()
    try:
        assert runtime.use_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_precision_auto_is_bf16_only_where_the_device_has_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    assert resolve_sample_precision("auto", "cpu") == "32"
    assert resolve_sample_precision("32", "cpu") == "32"
    with pytest.warns(UserWarning, match="no native bf16"):
        assert resolve_sample_precision("bf16", "cpu") == "bf16"  # asked for: it still runs, slowly
    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_sample_precision("auto", "cpu") == "bf16"
        assert resolve_sample_precision("bf16", "cpu") == "bf16"


def test_native_bf16_follows_the_cpu_flags() -> None:
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        pytest.skip("no /proc/cpuinfo on this system")
    flags = next(
        (line.split(":", 1)[1].split() for line in cpuinfo.read_text().splitlines() if line.startswith("flags")), []
    )
    assert native_bf16("cpu") == ("avx512_bf16" in flags or "amx_tile" in flags)


FAULTS = """
import resource, sys, torch
from diffuseg.nets.registry import build_network
from diffuseg.runtime import keep_freed_memory
torch.set_num_threads(1)
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
net = build_network("medsegdiff-b", 1, base_channels=8).eval()
x, t, image = torch.randn(2, 1, 256, 256), torch.full((2,), 0.5), torch.randn(1, 1, 256, 256)
with torch.inference_mode():
    net(x, t, image)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    net(x, t, image)
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="glibc's malloc")
def test_freed_memory_is_reused_without_page_faults() -> None:
    """The second call of a small MedSegDiff-B (two members at 256 px): by default its activations land on
    fresh pages (14,000-33,000 page faults in four runs); after ``keep_freed_memory`` the first call's memory is
    reused (1,000-2,000; 4,124 with another job on the other core)."""

    def run(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True)
        applied, faults = out.stdout.split()
        return applied, int(faults)

    default, kept = run("default"), min(run("keep"), run("keep"), key=lambda r: r[1])  # the quieter of two
    if kept[0] != "True":
        pytest.skip("not glibc's malloc")
    assert default[1] > 5000
    assert kept[1] < default[1] / 2  # 4,124 against 13,251 once beside another job
