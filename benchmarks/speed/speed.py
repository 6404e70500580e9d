"""Speed of diffuseg's networks, ensembles and training on this machine.

    .venv/bin/python benchmarks/speed/speed.py --quick    # smoke check, tiny networks, seconds
    .venv/bin/python benchmarks/speed/speed.py            # the full measurement (about 50 minutes on 2 cores)

Writes ``benchmarks/results/speed.md`` (``speed-quick.md`` with ``--quick``) and PNG plots beside it.

What it measures, all with ``torch.set_num_threads(--threads)`` (2 by default):
1. the machine's peak: best FLOP/s of large square fp32 and bf16 matmuls;
2. per network call (MedSegDiff-S/B/L at 256 px, the ambiguity paper's ``diffusion-unet`` at 128 px), at
   batch 1 and batched (the members of one image), in fp32 and bf16 autocast, channels_last off and on, and
   for MedSegDiff with the per-member part in micro-batches of one: parameters, FLOPs per call
   (``torch.utils.flop_counter.FlopCounterMode``: convolutions and matmuls), seconds per call and achieved
   FLOP/s against the peak of the same dtype. Where the CPU has no native bf16 (no AVX512-BF16 or AMX), bf16
   is emulated and is timed once only (the smallest network at batch 1);
3. one fused 25-member MedSegDiff-B ensemble for one 256 x 256 image: the effect of each optimisation
   (members batched, image encoder shared across members, channels_last, micro-batches, bf16 where native,
   fewer steps), by sampler and steps, against the ensemble size with members batched or one after another,
   and against members per call. Whole-ensemble times are measured end to end through
   ``inference.ensemble.sample_ensembles`` (sampler + STAPLE fusion + uncertainty map) where the run is
   short; longer ones are the measured time of one sampler step times the number of steps, plus the
   measured fusion time, and are marked "est.";
4. training throughput (images/s) of one optimiser step on ``DiffusionProcess.loss``;
5. where the time of the fastest ensemble setup goes (top operators from ``torch.profiler``);
6. ``torch.compile`` (inductor): compile time, s/call compiled, and the calls it takes to pay back;
7-9. the CPUs users have (``speed_cpu.py``): ``train-precision`` (fp32 against bf16 training steps, interleaved),
   ``threads`` (1 and 2 torch threads and two workers of one, with and without a busy core) and ``goal`` (the
   fused 25-member ensemble end to end with each change added, the FLOP floor at the peak, and
   ``diffuseg predict`` timed as a new process).

Networks have random weights: speed does not depend on them. Timings are the best of a few runs (the run
least disturbed by other processes on a shared machine); the load average is printed with the results.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
import speed_cpu
from common import (
    RESULTS,
    bar_plot,
    line_plot,
    load_average,
    machine,
    markdown_table,
    print_machine,
    time_call,
    write_markdown,
)

from diffuseg.config import DiffusionConfig, SampleConfig
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.enums import Fusion, SamplerKind
from diffuseg.inference.ensemble import prepare_network, sample_ensembles
from diffuseg.inference.fusion import fuse
from diffuseg.methods import diffusion_draw
from diffuseg.nets.registry import build_network
from diffuseg.runtime import native_bf16
from diffuseg.training.module import make_optimizer

# official MedSegDiff-B, one fp32 call at 256 px, batch 1, one thread: measured by benchmarks/speed/official.py
# (benchmarks/results/official.md, Zen 4); rerun that script on your machine for a same-machine figure
OFFICIAL_CALL_S = 5.09
GOAL_S = 60.0
NATIVE_BF16 = native_bf16("cpu")  # without it oneDNN emulates bf16: measured once, then skipped


@dataclass(frozen=True)
class Setup:
    """How one sampler step of an ensemble's members is computed: one network call for all of them with the
    image given once (``shared``, its encoder stages computed once) or repeated per member, in channels_last
    or not, bf16 autocast or fp32, and the per-member part in micro-batches of ``micro`` rows (0: all)."""

    label: str
    shared: bool = True
    cl: bool = False
    bf16: bool = False
    micro: int = 0

    def flags(self) -> str:
        return f"shared={self.shared} cl={self.cl} bf16={self.bf16} micro={self.micro}"

    def sample(self, **fields) -> SampleConfig:
        return SampleConfig(
            precision="bf16" if self.bf16 else "32", channels_last=self.cl, micro_batch=self.micro, **fields
        )


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: ``--quick`` shrinks everything so the script runs in seconds."""

    peak_sizes: tuple[int, ...]
    nets: tuple[tuple[str, int, int, dict], ...]  # (registry name, image size, batched members, options)
    ens_net: tuple[str, int, dict]
    members: int
    steps: tuple[tuple[str, int, str], ...]  # (sampler, steps, spacing) for the sampler table
    sizes: tuple[int, ...]  # ensemble sizes
    chunks: tuple[int, ...]  # members per network call when an ensemble is drawn in chunks
    size_steps: int  # DPM-Solver steps for the ensemble-size table
    measure_steps: int  # batched ensembles are measured end to end up to this many steps, longer ones estimated
    measure_seq_calls: int  # the same for members one after another, in network calls
    train: tuple[tuple[str, int, int, dict], ...]  # (name, size, batch, options)
    compile_calls: tuple[tuple[str, int, int, dict], ...]  # (name, size, batch, options)
    repeats: int
    train_precision: tuple[tuple[str, int, int, dict], ...] = ()  # (name, size, batch, options): fp32 vs bf16
    thread_net: tuple[str, int, dict] = ("medsegdiff-b", 256, {})  # the call timed with 1 / 2 threads
    thread_calls: int = 4  # member calls per timing in the threads part
    goal_steps: tuple[tuple[int, str], ...] = ((5, "quadratic"), (4, "quadratic"), (3, "quadratic"))
    cli_size: int = 256  # px of the `diffuseg predict` checkpoint (MedSegDiff-B preset)
    cli_options: tuple[str, ...] = ()  # extra overrides of that checkpoint's training run


FULL = Settings(
    peak_sizes=(2048, 3072, 4096),
    nets=(
        ("medsegdiff-s", 256, 25, {}),
        ("medsegdiff-b", 256, 25, {}),
        ("medsegdiff-l", 256, 25, {}),
        ("diffusion-unet", 128, 16, {}),
    ),
    ens_net=("medsegdiff-b", 256, {}),
    members=25,
    steps=(
        ("ddpm", 100, "linear"),
        ("ddpm", 10, "linear"),
        ("ddpm", 5, "quadratic"),
        ("ddim", 50, "linear"),
        ("ddim", 20, "linear"),
        ("ddim", 10, "linear"),
        ("ddim", 5, "linear"),
        ("dpm_solver", 20, "linear"),
        ("dpm_solver", 10, "linear"),
        ("dpm_solver", 5, "linear"),
    ),
    sizes=(1, 5, 25, 50),
    chunks=(1, 2, 5, 25),
    size_steps=10,
    measure_steps=10,
    measure_seq_calls=50,
    train=(
        ("medsegdiff-s", 256, 8, {}),
        ("medsegdiff-b", 256, 2, {}),
        ("medsegdiff-l", 256, 2, {}),
        ("diffusion-unet", 128, 8, {}),
        ("medsegdiff-b", 64, 8, {}),  # the learning curves' size and batch
        ("diffusion-unet", 64, 8, {"channels": (16, 16, 32, 64)}),
    ),
    compile_calls=(("medsegdiff-b", 256, 1, {}), ("diffusion-unet", 128, 16, {})),
    repeats=5,
    train_precision=(
        ("medsegdiff-b", 64, 2, {}),
        ("medsegdiff-b", 64, 8, {}),
        ("medsegdiff-b", 128, 2, {}),
        ("medsegdiff-b", 128, 8, {}),
        ("medsegdiff-b", 256, 2, {}),
        ("diffusion-unet", 64, 8, {"channels": (16, 16, 32, 64)}),  # the demo's network
    ),
)
QUICK = Settings(
    peak_sizes=(512,),
    nets=(
        ("medsegdiff-s", 64, 4, {"base_channels": 8}),
        ("diffusion-unet", 32, 4, {"channels": (8, 8, 16, 32)}),
    ),
    ens_net=("medsegdiff-b", 64, {"base_channels": 8}),
    members=4,
    steps=(("ddpm", 4, "linear"), ("ddpm", 2, "quadratic"), ("ddim", 2, "linear"), ("dpm_solver", 2, "linear")),
    sizes=(1, 2, 4),
    chunks=(1, 2, 4),
    size_steps=2,
    measure_steps=2,
    measure_seq_calls=4,
    train=(("medsegdiff-s", 64, 2, {"base_channels": 8}),),
    compile_calls=(("medsegdiff-s", 64, 1, {"base_channels": 8}),),
    repeats=1,
    train_precision=(
        ("medsegdiff-b", 64, 2, {"base_channels": 8}),
        ("diffusion-unet", 32, 2, {"channels": (8, 8, 8, 8)}),
    ),
    thread_net=("medsegdiff-b", 64, {"base_channels": 8}),
    thread_calls=2,
    goal_steps=((2, "quadratic"),),
    cli_size=64,
    cli_options=("model.options.base_channels=8",),
)


# --------------------------------------------------------------------------------------------- helpers
def precision(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def memory(channels_last: bool) -> torch.memory_format:
    return torch.channels_last if channels_last else torch.contiguous_format


def make_net(name: str, options: dict, channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_network(name, 1, **options).eval().to(memory_format=memory(channels_last))


def call_inputs(size: int, rows: int, images: int, channels_last: bool):
    """x_t (rows, 1, S, S), t (rows,), image (images, 1, S, S); rows = images * members."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 1, size, size, generator=gen).contiguous(memory_format=memory(channels_last))
    t = torch.full((rows,), 0.5)
    image = torch.randn(images, 1, size, size, generator=gen).contiguous(memory_format=memory(channels_last))
    return x, t, image


def count_flops(net: torch.nn.Module, *args: torch.Tensor) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        net(*args)
    return int(counter.get_total_flops())


def time_net(net, args, bf16: bool, repeats: int) -> float:
    def call():
        with torch.inference_mode(), precision(bf16):
            net(*args)

    return time_call(call, warmup=1, repeats=repeats, max_seconds=15)["best"]


# --------------------------------------------------------------------------------------------- 1. peak
def measure_peak(sizes: tuple[int, ...]) -> dict[str, float]:
    """Best FLOP/s of an n x n matmul (2 n^3 FLOPs) over ``sizes``, fp32 and bf16 (emulated bf16, at
    well under 1 % of fp32, only at n = 512: a 4096 matmul would take minutes)."""
    peak = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        best = 0.0
        used = sizes if NATIVE_BF16 or name == "fp32" else (512,)
        for n in used:
            a = torch.randn(n, n).to(dtype)
            b = torch.randn(n, n).to(dtype)
            seconds = time_call(lambda a=a, b=b: a @ b, warmup=1, repeats=8, max_seconds=20)["best"]
            best = max(best, 2 * n**3 / seconds)
        peak[name] = best
        print(f"peak {name}: {best / 1e9:.1f} GFLOP/s (matmul, sizes {used})", flush=True)
    return peak


# --------------------------------------------------------------------------------------------- 2. calls
def call_setups(k: int, smallest: bool, micro: bool) -> list[Setup]:
    """The (channels_last, bf16, micro-batch) settings timed for one network at batch ``k``. Emulated bf16
    (no AVX512-BF16 / AMX) is timed once, for the smallest network at batch 1, to show what it costs."""
    setups = []
    for cl in (False, True):
        for bf16 in (False, True):
            if bf16 and not NATIVE_BF16 and (cl or k > 1 or not smallest):
                continue
            setups.append(Setup("", cl=cl, bf16=bf16))
            if micro and k > 1:
                setups.append(Setup("", cl=cl, bf16=bf16, micro=1))
    return setups


def network_calls(s: Settings, peak: dict[str, float]) -> list[dict]:
    rows = []
    for name, size, members, options in s.nets:
        net = make_net(name, options)
        params = sum(p.numel() for p in net.parameters())
        for k in (1, members):
            flops = count_flops(net, *call_inputs(size, k, 1, False))
            for setup in call_setups(k, name == s.nets[-1][0], hasattr(net, "micro_batch")):
                net = prepare_network(net, setup.sample(), "cpu")
                sec = time_net(net, call_inputs(size, k, 1, setup.cl), setup.bf16, s.repeats)
                achieved = flops / sec
                rows.append(
                    dict(
                        net=name,
                        size=size,
                        batch=k,
                        params=params,
                        gflop=flops / 1e9,
                        cl=setup.cl,
                        bf16=setup.bf16,
                        micro=setup.micro,
                        seconds=sec,
                        gflops=achieved / 1e9,
                        of_peak=achieved / peak["bf16" if setup.bf16 and NATIVE_BF16 else "fp32"],
                    )
                )
                print(
                    f"{name} {size}px batch {k} {setup.flags()}: {sec:.3f} s, {achieved / 1e9:.1f} GFLOP/s", flush=True
                )
        del net
    return rows


def calls_table(rows: list[dict]) -> str:
    bf16 = "yes" if NATIVE_BF16 else "emulated"
    return markdown_table(
        ["network", "px", "batch (members of 1 image)", "params (M)", "GFLOP/call", "channels_last", "bf16",
         "micro-batch", "s/call", "GFLOP/s", "of peak"],
        [
            [r["net"], r["size"], r["batch"], r["params"] / 1e6, r["gflop"], r["cl"], bf16 if r["bf16"] else "no",
             r["micro"] or "all", r["seconds"], r["gflops"], f"{100 * r['of_peak']:.0f}%"]
            for r in rows
        ],
    )  # fmt: skip


# --------------------------------------------------------------------------------------------- 3. ensembles
def one_image(size: int) -> torch.Tensor:
    return torch.randn(1, size, size, generator=torch.Generator().manual_seed(1))


def time_ensemble(net, process, cfg: SampleConfig, size: int) -> float:
    """Seconds for one fused ensemble of one image through ``sample_ensembles`` (sampler + fusion + map)."""
    draw = diffusion_draw(prepare_network(net, cfg, "cpu"), process, cfg)

    def run():
        results = list(sample_ensembles(draw, [("case", one_image(size))], cfg))
        assert results[0].fused.shape[-1] == size

    return time_call(run, warmup=0, repeats=1)["best"]


def fusion_seconds(members: int, size: int) -> float:
    masks = (torch.rand(1, members, size, size, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    return time_call(lambda: fuse(Fusion.STAPLE, masks), warmup=1, repeats=3)["best"]


def step_seconds(net, size: int, members: int, setup: Setup, repeats: int) -> float:
    """One sampler step (one network call) for ``members`` members of one image."""
    net = prepare_network(net, setup.sample(), "cpu")
    x, t, image = call_inputs(size, members, 1 if setup.shared else members, setup.cl)
    return time_net(net, (x, t, image), setup.bf16, repeats)


def ladder_setups() -> list[Setup]:
    """Each optimisation on top of the one before; bf16 only where the CPU computes it natively."""
    setups = [
        Setup("members batched, image repeated per member, fp32", shared=False),
        Setup("+ image encoder shared across members, fp32"),
        Setup("+ channels_last, fp32", cl=True),
        Setup("+ per-member part one member at a time (micro_batch=1), fp32", cl=True, micro=1),
    ]
    if NATIVE_BF16:
        setups += [
            Setup("+ bf16 autocast, contiguous, micro_batch=1", micro=1, bf16=True),
            Setup("+ bf16 autocast + channels_last, micro_batch=1", cl=True, micro=1, bf16=True),
        ]
    return setups


def ladder(s: Settings, net, size: int, fusion_s: float, steps_ref: int = 100) -> tuple[str, list, Setup]:
    """The effect of each optimisation on one ensemble (one network call per step for all members), and the
    fastest setup."""
    m = s.members
    one = step_seconds(net, size, 1, Setup(""), s.repeats)
    rungs = [("official MedSegDiff-B (results/official.md), members one after another", OFFICIAL_CALL_S * m, 100, None)]
    rungs.append(("ours, members one after another (batch 1), fp32", one * m, steps_ref, None))
    for setup in ladder_setups():
        sec = step_seconds(net, size, m, setup, s.repeats)
        rungs.append((setup.label, sec, steps_ref, setup))
        print(f"ladder: {setup.label}: {sec:.3f} s per step", flush=True)
    best = min((r for r in rungs if r[3] is not None), key=lambda r: r[1])
    rungs.append(("fastest of the above, DDPM 10 steps", best[1], 10, best[3]))
    rungs.append(("fastest of the above, DDPM 5 steps on the quadratic grid", best[1], 5, best[3]))
    rows = []
    for label, per_step, steps, _ in rungs:
        total = per_step * steps + (fusion_s if "official" not in label else 0.0)
        rows.append([label, per_step, steps, total, total / rungs[0][1] / rungs[0][2]])
    table = markdown_table(
        ["configuration", "s per step (all members)", "steps", "s per ensemble (est.)", "vs official"], rows
    )
    return table, rows, best[3]


def by_sampler(s: Settings, net, process, size: int, setup: Setup, per_step: float, fusion_s: float):
    rows = []
    for sampler, steps, spacing in s.steps:
        cfg = setup.sample(
            sampler=SamplerKind.parse(sampler), steps=steps, spacing=spacing, samples=s.members, batch_size=s.members
        )
        if steps <= s.measure_steps:
            sec, how = time_ensemble(net, process, cfg, size), "measured"
        else:
            sec, how = per_step * steps + fusion_s, "est."
        rows.append([sampler, steps, spacing, s.members, sec, how, sec < GOAL_S])
        print(f"ensemble {sampler} {steps} steps ({spacing}): {sec:.1f} s ({how})", flush=True)
    table = markdown_table(
        ["sampler", "steps", "grid", "members", "s per fused ensemble", "how", f"< {GOAL_S:.0f} s"], rows
    )
    return table, rows


def by_size(s: Settings, net, process, size: int, setup: Setup) -> tuple[str, list]:
    """``n`` members in one call per step (``setup``) against one member per call, one after another."""
    rows = []
    alone = dataclasses.replace(setup, micro=0)
    one = step_seconds(net, size, 1, alone, s.repeats)
    for n in s.sizes:
        cfg = setup.sample(sampler=SamplerKind.DPM_SOLVER, steps=s.size_steps, samples=n, batch_size=n)
        batched = time_ensemble(net, process, cfg, size)
        seq_calls = n * s.size_steps
        if seq_calls <= s.measure_seq_calls:
            seq_cfg = alone.sample(sampler=SamplerKind.DPM_SOLVER, steps=s.size_steps, samples=n, batch_size=1)
            sequential, how = time_ensemble(net, process, seq_cfg, size), "measured"
        else:
            sequential, how = one * seq_calls + fusion_seconds(n, size), "est."
        rows.append([n, batched, sequential, how, sequential / batched])
        print(f"ensemble size {n}: batched {batched:.2f} s, one after another {sequential:.2f} s ({how})", flush=True)
    table = markdown_table(
        ["members", "batched: s", "one after another: s", "how (one after another)", "speed-up"], rows
    )
    return table, rows


def chunked(s: Settings, net, process, size: int, setup: Setup) -> str:
    """Members per call: one step of the whole ensemble as ceil(members / k) calls of k members (``setup``'s
    precision and memory format, no micro-batches), then whole ensembles end to end at the best k (all
    members in one call with micro-batches are the "By sampler and steps" table)."""
    rows = []
    whole = dataclasses.replace(setup, micro=0)
    for k in s.chunks:
        calls = -(-s.members // k)
        sec = step_seconds(net, size, k, whole, s.repeats)
        rows.append([k, calls, sec, sec * calls, sec / k])
        print(f"chunks of {k}: {sec:.3f} s per call, {sec * calls:.2f} s per ensemble step", flush=True)
    best = min(rows, key=lambda r: r[3])[0]
    table = markdown_table(["members per call", "calls per step", "s per call", "s per step (all members)",
                            "s per member-call"], rows)  # fmt: skip
    e2e = []
    for sampler, steps, spacing in s.steps:
        if steps <= s.measure_steps:
            cfg = whole.sample(
                sampler=SamplerKind.parse(sampler), steps=steps, spacing=spacing, samples=s.members, batch_size=best
            )
            sec = time_ensemble(net, process, cfg, size)
            e2e.append([sampler, steps, spacing, s.members, best, sec, sec < GOAL_S])
            print(f"ensemble {sampler} {steps} steps, {best} per call: {sec:.1f} s", flush=True)
    table += "\nWhole fused ensembles, measured end to end (`sample_ensembles`):\n\n"
    table += markdown_table(["sampler", "steps", "grid", "members", "members per call", "s per fused ensemble",
                             f"< {GOAL_S:.0f} s"], e2e)  # fmt: skip
    return table


# --------------------------------------------------------------------------------------------- 4. training
TRAIN_TITLE = "Training throughput (one AdamW step on DiffusionProcess.loss, per-parameter against fused)"


def training(s: Settings) -> tuple[str, list]:
    """Seconds per AdamW step on ``DiffusionProcess.loss`` in fp32 (and bf16 autocast where native), with torch's
    per-parameter AdamW loop (its CPU default, diffuseg's optimiser before) and the fused one training uses now
    (``training.module.make_optimizer``). The variants of a network step in turn, ``s.repeats`` rounds, best of each."""
    process = DiffusionProcess(DiffusionConfig())
    rows = []
    for name, size, batch, options in s.train:
        gen = torch.Generator().manual_seed(0)
        masks = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float()
        image = torch.randn(batch, 1, size, size, generator=gen)
        steps = {}
        for bf16 in (False, True) if NATIVE_BF16 else (False,):
            for fused in (False, True):
                net = make_net(name, options).train()
                opt = make_optimizer(net.parameters(), 1e-4, 0.01, "cpu", fused=fused)

                def step(net=net, opt=opt, bf16=bf16, masks=masks, image=image, gen=gen):
                    with precision(bf16):
                        loss = process.loss(net, masks, image, gen)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()

                step()  # warm-up
                steps[bf16, fused] = step
        times: dict[tuple[bool, bool], list[float]] = {key: [] for key in steps}
        for _ in range(s.repeats):
            for key, step in steps.items():
                times[key].append(time_call(step, warmup=0, repeats=1)["best"])
        for (bf16, fused), sec in ((key, min(t)) for key, t in times.items()):
            before = min(times[bf16, False])
            rows.append([name, size, batch, "bf16" if bf16 else "fp32", "fused" if fused else "per-parameter",
                         sec, batch / sec, before / sec])  # fmt: skip
            print(f"train {name} {size}px batch {batch} bf16={bf16} fused={fused}: {sec:.3f} s/step", flush=True)
        del steps
    header = ["network", "px", "batch", "precision", "AdamW", "s/step", "images/s", "speed-up over per-parameter"]
    return markdown_table(header, rows), rows


# --------------------------------------------------------------------------------------------- 5. profile
def profile(net, size: int, members: int, setup: Setup) -> str:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    net = prepare_network(net, setup.sample(), "cpu")
    args = call_inputs(size, members, 1, setup.cl)
    with torch.inference_mode(), precision(setup.bf16):
        net(*args)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            net(*args)
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events)
    rows = [
        [e.key, e.count, e.self_cpu_time_total / 1e6, f"{100 * e.self_cpu_time_total / total:.1f}%"]
        for e in events[:12]
    ]
    return markdown_table(["operator", "calls", "self CPU s", "share"], rows)


# --------------------------------------------------------------------------------------------- 6. compile
def compiled(s: Settings) -> str:
    """``torch.compile`` (inductor, default mode) of one MedSegDiff call at batch 1 and one batched
    ``diffusion-unet`` call, in the CPU's best precision: first-call (compile) time, s/call, and how many calls
    it takes to win the compile time back. Inductor's on-disk caches go to a new folder, so the first call
    compiles from scratch, as on a user's first run."""
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        for name, size, k, options in s.compile_calls:
            rows.append(compile_one(name, size, k, options, s.repeats))
    return markdown_table(["call", "bf16", "eager s", "first compiled call s", "compiled s", "speed-up",
                           "calls to pay back the compile"], rows)  # fmt: skip


def compile_one(name: str, size: int, k: int, options: dict, repeats: int) -> list:
    """One row of ``compiled``: eager s/call, first compiled call (compile) s, compiled s/call, pay-back."""
    net = make_net(name, options)
    args = call_inputs(size, k, 1, False)
    eager = time_net(net, args, NATIVE_BF16, repeats)
    fast = torch.compile(net)
    start = time.perf_counter()
    with torch.inference_mode(), precision(NATIVE_BF16):
        fast(*args)
    first = time.perf_counter() - start
    warm = time_net(fast, args, NATIVE_BF16, repeats)
    torch._dynamo.reset()
    payback = first / (eager - warm) if eager > warm else float("inf")
    print(f"compile {name}: eager {eager:.3f} s, first call {first:.1f} s, compiled {warm:.3f} s", flush=True)
    return [f"{name} {size}px batch {k}", NATIVE_BF16, eager, first, warm, eager / warm, payback]


# --------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny networks and sizes: a smoke check in seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--only",
        default="peak,calls,ensemble,chunks,train,profile,compile,train-precision,threads,goal",
        help="comma-separated parts to run (peak is always measured)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="goal: the src folder of another checkout (e.g. `git worktree add /tmp/base HEAD~3`), whose "
        "`diffuseg predict` is timed in turn with this one",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    s = QUICK if args.quick else FULL
    parts = set(args.only.split(","))
    info = machine()
    print_machine(info)
    suffix = "-quick" if args.quick else ""
    if parts != set(parser.get_default("only").split(",")):
        suffix += "-" + "-".join(sorted(parts))
    started = time.perf_counter()

    peak = measure_peak(s.peak_sizes)
    sections = [("Peak (large matmul)", markdown_table(["dtype", "GFLOP/s"], [[k, v / 1e9] for k, v in peak.items()]))]

    best = ladder_setups()[-1]  # the ladder's top rung unless the ladder runs and finds a faster one
    call_rows: list[dict] = []
    if "calls" in parts:
        call_rows = network_calls(s, peak)
        sections.append(("Network calls", ""))  # filled in at the end, against the best peak

    if "ensemble" in parts:
        name, size, options = s.ens_net
        net = make_net(name, options)
        process = DiffusionProcess(DiffusionConfig())
        fusion_s = fusion_seconds(s.members, size)
        table, rungs, best = ladder(s, net, size, fusion_s)
        sections.append(
            (
                f"One {s.members}-member {name} ensemble at {size} px: each optimisation",
                table + f"\nSTAPLE fusion of {s.members} masks: {fusion_s:.3f} s. Times are the measured time of one "
                "sampler step (one network call for all members) times the steps, plus fusion.\n",
            )
        )
        bar_plot(
            RESULTS / f"speed-ladder{suffix}.png",
            [r[0][:40] for r in rungs],
            [r[3] for r in rungs],
            ylabel="s per fused ensemble",
            title="Each optimisation",
            logy=True,
            hline=(GOAL_S, "goal 60 s"),
        )
        per_step = next(r[1] for r in rungs if r[0] == best.label)
        table, rows = by_sampler(s, net, process, size, best, per_step, fusion_s)
        sections.append((f"By sampler and steps (fastest setup: {best.flags()})", table))
        series: dict[str, tuple[list, list]] = {}
        for sampler, steps, _, _, sec, _, _ in rows:
            series.setdefault(sampler, ([], []))
            series[sampler][0].append(steps)
            series[sampler][1].append(sec)
        line_plot(
            RESULTS / f"speed-samplers{suffix}.png",
            series,
            xlabel="steps",
            ylabel="s per fused ensemble",
            title=f"{s.members}-member {name} ensemble, {size} px",
            hline=(GOAL_S, "goal"),
        )
        table, rows = by_size(s, net, process, size, best)
        sections.append((f"By ensemble size (DPM-Solver++ {s.size_steps} steps)", table))
        line_plot(
            RESULTS / f"speed-members{suffix}.png",
            {
                "batched": ([r[0] for r in rows], [r[1] for r in rows]),
                "one after another": ([r[0] for r in rows], [r[2] for r in rows]),
            },
            xlabel="members",
            ylabel="s per fused ensemble",
            title="Ensemble size",
            logx=True,
            logy=True,
        )

    if "chunks" in parts:
        name, size, options = s.ens_net
        table = chunked(s, make_net(name, options), DiffusionProcess(DiffusionConfig()), size, best)
        flags = dataclasses.replace(best, micro=0).flags()  # chunks run without micro-batches
        sections.append((f"Members per call ({s.members}-member {name} ensemble, {size} px, {flags})", table))

    if "train" in parts:
        table, _ = training(s)
        sections.append((TRAIN_TITLE, table))

    if "profile" in parts:
        name, size, options = s.ens_net
        sections.append(
            (
                f"Where the time goes: one {name} call, {s.members} members, {best.flags()}",
                profile(make_net(name, options), size, s.members, best),
            )
        )

    if "compile" in parts:
        sections.append(("torch.compile (inductor)", compiled(s)))

    if "train-precision" in parts and s.train_precision:
        sections.append(("Training: fp32 against bf16 autocast (interleaved)",
                         speed_cpu.train_precision(s.train_precision, s.repeats)))  # fmt: skip

    if "threads" in parts:
        sections.append(("Threads: 1 against 2, quiet and with the other core busy (interleaved)",
                         speed_cpu.threads(s.thread_net, s.thread_calls)))  # fmt: skip

    if "goal" in parts:
        name, size, options = s.ens_net
        table, bars = speed_cpu.goal_ladder(s.ens_net, s.members, s.goal_steps, args.threads)
        bar_plot(
            RESULTS / f"speed{suffix}.png",
            [b[0] for b in bars],
            [b[1] for b in bars],
            ylabel="s per fused ensemble",
            title=f"{s.members}-member {name} ensemble at {size} px, each change added ({info['cpu']})",
            hline=(4, "goal 4 s"),
        )
        member_flops = count_flops(make_net(name, options), *call_inputs(size, 1, 1, False))
        floor = {n: member_flops * s.members * n / peak["bf16" if NATIVE_BF16 else "fp32"] for n, _ in s.goal_steps}
        table += (
            f"\nOne member call: {member_flops / 1e9:.1f} GFLOP (the image encoder's shared part counted once per "
            "member, so a little more than a batched call does). At the matmul peak measured at the start "
            f"({'bf16' if NATIVE_BF16 else 'fp32'}), {s.members} members would need at least "
            + ", ".join(f"{v:.1f} s for {n} steps" for n, v in floor.items())
            + ".\n"
        )
        sections.append((f"Goal: one fused {s.members}-member {name} ensemble at {size} px, end to end", table))
        cli = speed_cpu.predict_cli(s.cli_size, s.members, s.goal_steps[:2], s.cli_options, args.baseline)
        sections.append(("Goal: `diffuseg predict` of one DDTI image, a new process each", cli))

    again = measure_peak(s.peak_sizes)  # a second look: a busy neighbour at the start must not lower the peak
    used = {k: max(peak[k], again[k]) for k in peak}
    sections[0] = (
        "Peak (large matmul; the better of a measurement at the start and one at the end)",
        markdown_table(
            ["dtype", "start GFLOP/s", "end GFLOP/s", "used"],
            [[k, peak[k] / 1e9, again[k] / 1e9, used[k] / 1e9] for k in peak],
        ),
    )
    if call_rows:
        for r in call_rows:
            r["of_peak"] = r["gflops"] * 1e9 / used["bf16" if r["bf16"] and NATIVE_BF16 else "fp32"]
        index = next(i for i, (h, _) in enumerate(sections) if h == "Network calls")
        sections[index] = ("Network calls", calls_table(call_rows))
        labels = [
            f"{r['net'].replace('medsegdiff', 'msd')} b{r['batch']}{' cl' if r['cl'] else ''}"
            f"{' bf16' if r['bf16'] else ''}{' micro' if r['micro'] else ''}"
            for r in call_rows
        ]
        bar_plot(
            RESULTS / f"speed-calls{suffix}.png",
            labels,
            [100 * r["of_peak"] for r in call_rows],
            ylabel="% of peak FLOP/s",
            title="Network calls: achieved FLOP/s vs matmul peak",
            hline=(50, "goal"),
        )

    minutes = (time.perf_counter() - started) / 60
    sections.append(("Run", f"{minutes:.1f} minutes; load average at the end (1/5/15 min): {load_average()}.\n"))
    write_markdown(RESULTS / f"speed{suffix}.md", "Speed", info, sections)


if __name__ == "__main__":
    main()
