"""Parts of ``speed.py`` on speed on the CPUs users have; run through ``speed.py --only ...``.

- ``train-precision``: one training step in fp32 and in bf16 autocast (what Lightning's ``bf16-mixed`` runs on a
  CPU), interleaved A B A B so a busy neighbour hits both alike;
- ``threads``: member calls with 1 and 2 torch threads and with two workers of one thread (``sample.workers``),
  on a quiet machine and with a busy loop pinned to one core, interleaved;
- ``goal``: a fused 25-member MedSegDiff-B ensemble at 256 px end to end through ``sample_ensembles``, each
  optimisation added to the one before, and ``diffuseg predict`` timed as a user runs it (a new process).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from common import load_average, markdown_table, time_call

from diffuseg.config import DiffusionConfig, SampleConfig
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.enums import SamplerKind
from diffuseg.inference.ensemble import prepare_network, sample_ensembles
from diffuseg.methods import diffusion_draw
from diffuseg.nets.registry import build_network
from diffuseg.runtime import keep_freed_memory, native_bf16

REPO = Path(__file__).resolve().parents[2]
DDTI_IMAGE = REPO / ".." / "shared" / "data" / "ddti" / "cropped" / "100_1(1).png"
NATIVE = native_bf16("cpu")


def _net(name: str, options: dict, channels_last: bool = False) -> torch.nn.Module:
    torch.manual_seed(0)
    net = build_network(name, 1, **options)
    return net.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def _autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


# --------------------------------------------------------------------------------------------- train precision
def _train_step(name: str, size: int, batch: int, options: dict):
    """``step(bf16)``: one AdamW step of a fresh ``name`` network on ``DiffusionProcess.loss``."""
    process = DiffusionProcess(DiffusionConfig())
    net = _net(name, options).train()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(batch, 1, size, size, generator=gen) > 0.5).float()
    image = torch.randn(batch, 1, size, size, generator=gen)

    def step(bf16: bool) -> None:
        with _autocast(bf16):
            loss = process.loss(net, masks, image, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def train_precision(rows_spec, repeats: int) -> str:
    """s per AdamW step on ``DiffusionProcess.loss``, fp32 against bf16 autocast, best of interleaved rounds."""
    rows = []
    for name, size, batch, options in rows_spec:
        step = _train_step(name, size, batch, options)
        best = {False: float("inf"), True: float("inf")}
        for _ in range(max(2, repeats // 2)):  # A B A B
            for bf16 in (False, True):
                best[bf16] = min(best[bf16], time_call(lambda b=bf16, f=step: f(b), warmup=1, repeats=1)["best"])
        rows.append([name, size, batch, best[False], best[True], best[False] / best[True], load_average()])
        print(f"train {name} {size}px b{batch}: fp32 {best[False]:.3f} s, bf16 {best[True]:.3f} s", flush=True)
    note = "" if NATIVE else "\nbf16 is emulated on this CPU (no AVX512-BF16 / AMX): expect it to be far slower.\n"
    header = ["network", "px", "batch", "fp32 s/step", "bf16 autocast s/step", "bf16 speed-up", "load (1/5/15 min)"]
    return markdown_table(header, rows) + note


# --------------------------------------------------------------------------------------------- threads
def _busy_core(core: int) -> subprocess.Popen:
    """A busy loop pinned to ``core``: the 'other job' of the threads part (killed by the caller)."""
    code = f"import os\nos.sched_setaffinity(0, {{{core}}})\nwhile True:\n    pass\n"
    return subprocess.Popen([sys.executable, "-c", code])


def threads(spec: tuple[str, int, dict], calls: int, rounds: int = 2) -> str:
    """``calls`` single-member calls of the ``spec`` network (bf16 + channels_last where native), timed with one
    torch thread, with two, and as two workers of one thread each (``calls / 2`` calls each), quiet and with
    the other core busy; conditions interleaved (quiet, busy, quiet, busy) and the best kept."""
    name, size, options = spec
    net = _net(name, options, True).eval()
    x = torch.randn(1, 1, size, size).contiguous(memory_format=torch.channels_last)
    t, image = torch.full((1,), 0.5), torch.randn(1, 1, size, size).contiguous(memory_format=torch.channels_last)

    def run(n: int, inner: int | None = None) -> None:
        if inner is not None:
            torch.set_num_threads(inner)
        with torch.inference_mode(), _autocast(NATIVE):
            for _ in range(n):
                net(x, t, image)

    def two_workers() -> None:
        pool = [threading.Thread(target=run, args=(calls // 2, 1)) for _ in range(2)]
        for w in pool:
            w.start()
        for w in pool:
            w.join()

    settings = {"1 thread": (1, lambda: run(calls)), "2 threads": (2, lambda: run(calls)),
                "2 workers x 1 thread": (1, two_workers)}  # fmt: skip
    before = torch.get_num_threads()
    best: dict[tuple[str, str], float] = {}
    loads: dict[str, str] = {}
    try:
        run(1)
        for _ in range(rounds):
            for condition in ("quiet", "other core busy"):
                busy = _busy_core(1) if condition != "quiet" and (os.cpu_count() or 1) > 1 else None
                try:
                    time.sleep(1.0 if busy else 0.0)
                    for label, (n_threads, fn) in settings.items():
                        torch.set_num_threads(n_threads)
                        sec = time_call(fn, warmup=0, repeats=1)["best"]
                        best[condition, label] = min(best.get((condition, label), float("inf")), sec)
                        print(f"threads {condition}, {label}: {sec:.2f} s for {calls} calls", flush=True)
                    loads[condition] = load_average()
                finally:
                    if busy is not None:
                        busy.kill()
                        busy.wait()
    finally:
        torch.set_num_threads(before)
    rows = [[c, label, best[c, label], best[c, "1 thread"] / best[c, label], loads[c]]
            for c in ("quiet", "other core busy") for label in settings]  # fmt: skip
    header = ["machine", "setting", f"s for {calls} member calls", "speed-up vs 1 thread", "load after (1/5/15 min)"]
    return (
        markdown_table(header, rows)
        + f"\n{name} at {size} px, batch 1, bf16 autocast {'on' if NATIVE else 'off (not native)'}, channels_last; "
        "'quiet' means no busy loop of ours (other jobs on this machine may still run: see the load).\n"
    )


# --------------------------------------------------------------------------------------------- goal
FAST_MICRO = 5  # rows of the per-member part at once in a bf16 network (3-5 measured best on an AMX Xeon)


def _ensemble_seconds(net, process, cfg: SampleConfig, size: int, threads: int, autocast: bool = False) -> float:
    """Best of two fused ensembles of one image (one when it takes over 40 s). ``autocast``: the network is
    prepared in fp32 and sampled under bf16 autocast, as before ``nets.bf16`` (``cfg.precision`` must be bf16)."""
    torch.set_num_threads(threads)
    prepared = prepare_network(net, dataclasses.replace(cfg, precision="32") if autocast else cfg, "cpu")
    draw = diffusion_draw(prepared, process, cfg)
    image = torch.randn(1, size, size, generator=torch.Generator().manual_seed(1))

    def run() -> None:
        results = list(sample_ensembles(draw, [("case", image)], cfg))
        assert results[0].fused.shape[-1] == size

    return time_call(run, warmup=0, repeats=2, max_seconds=40)["best"]


def goal_ladder(
    spec: tuple[str, int, dict], members: int, steps: tuple[tuple[int, str], ...], threads: int
) -> tuple[str, list[tuple[str, float]]]:
    """Whole fused ensembles, measured end to end (best of two where one takes under 40 s); each rung adds one
    change to the one before. The first three rungs are the path before ``runtime.keep_freed_memory`` and
    ``nets.bf16`` (they include the FF-Parser's contiguous planes). The rungs with one worker use ``threads``
    torch threads; two workers use one each. Returns the table and (short label, seconds) per rung."""
    name, size, options = spec
    net = _net(name, options).eval()
    process = DiffusionProcess(DiffusionConfig())
    first_steps, first_grid = steps[0]
    base = dict(sampler=SamplerKind.DDPM, steps=first_steps, spacing=first_grid, samples=members, batch_size=members)
    bf16 = "bf16" if NATIVE else "32"
    two = dict(channels_last=True, micro_batch=1, workers=2, precision=bf16)
    rungs = [
        (f"fp32, channels_last, micro_batch=1, {threads} torch thread(s)", "fp32",
         dict(channels_last=True, micro_batch=1, workers=1), threads, True, False),
        ("+ bf16 autocast" if NATIVE else "(bf16 not native: skipped)", "bf16 autocast",
         dict(channels_last=True, micro_batch=1, workers=1, precision=bf16), threads, True, False),
        ("+ 2 workers of 1 torch thread (sample.workers=2): the path before", "2 workers (before)", two, 2, True,
         False),
        ("+ freed memory kept for reuse (runtime.keep_freed_memory)", "freed memory kept", two, 2, True, True),
        ("+ the network in bf16 end to end (nets.bf16), no autocast" if NATIVE else "(bf16 not native: skipped)",
         "bf16 network", two, 2, False, True),
        (f"+ sample.micro_batch={FAST_MICRO}", f"micro_batch={FAST_MICRO} (now)", {**two, "micro_batch": FAST_MICRO},
         2, False, True),
    ]  # fmt: skip
    rows, bars, best_cfg = [], [], None
    for label, short, fields, n_threads, autocast, keep in rungs:
        if keep:
            keep_freed_memory()  # for the rest of this process: it cannot be undone
        cfg = SampleConfig(**base, **fields)
        sec = _ensemble_seconds(net, process, cfg, size, n_threads, autocast and cfg.precision == "bf16")
        rows.append([label, f"ddpm {first_steps} {first_grid}", sec, load_average()])
        bars.append((short, sec))
        print(f"goal: {label}: {sec:.1f} s", flush=True)
        best_cfg = (fields, n_threads)
    for n, grid in steps[1:]:
        cfg = SampleConfig(**{**base, "steps": n, "spacing": grid}, **best_cfg[0])
        sec = _ensemble_seconds(net, process, cfg, size, best_cfg[1])
        rows.append([f"+ {n} steps", f"ddpm {n} {grid}", sec, load_average()])
        bars.append((f"{n} steps", sec))
        print(f"goal: {n} steps: {sec:.1f} s", flush=True)
    table = markdown_table(["configuration", "sampler", "s per fused ensemble (measured)", "load (1/5/15 min)"], rows)
    return table, bars


def predict_cli(
    size: int,
    members: int,
    steps: tuple[tuple[int, str], ...],
    options: tuple[str, ...],
    baseline: Path | None = None,
    repeats: int = 3,
) -> str:
    """``diffuseg predict`` of one DDTI image as a fused ensemble, timed as a new process (start, checkpoint
    load, sampling, STAPLE, writing; median of ``repeats``), from a 1-step MedSegDiff-B checkpoint (speed does not
    depend on weights). With ``baseline`` (the ``src`` folder of another checkout, e.g. the commit before a
    change), each command also runs with that code, from its own checkpoint, in turn with this one.

    Args:
        size: the checkpoint's image size.
        members: ensemble members.
        steps: (steps, spacing) of each timed command, 5-step quadratic first.
        options: extra overrides of the checkpoint's training run.
        baseline: another checkout's ``src`` to time beside this one, or None.
        repeats: runs of each command.
    """
    if not DDTI_IMAGE.exists():
        return f"skipped: {DDTI_IMAGE} not found\n"
    codes = {"this": REPO / "src", **({"baseline": baseline} if baseline else {})}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp)
        cli = [sys.executable, "-m", "diffuseg.cli"]
        for code, src in codes.items():
            subprocess.run([*cli, "train", "medsegdiff-b-ddti", "--data", str(DDTI_IMAGE.parents[1]), "--out",
                            str(run / code), "train.steps=1", "train.batch_size=2", "train.val_every=0",
                            "train.accelerator=cpu", "train.devices=1", f"data.image_size={size}", *options],
                           check=True, env=_env(src), capture_output=True)  # fmt: skip
        fast = ["sample.precision=auto", "sample.channels_last=true", "--threads", "2", "sample.workers=2"]
        micro = {"this": f"sample.micro_batch={FAST_MICRO}", "baseline": "sample.micro_batch=1"}
        times: dict[tuple, list[float]] = {}
        for r in range(repeats):
            for n, grid in steps:
                for code, src in codes.items():
                    command = [*cli, "predict", str(run / code / "checkpoints" / "last.ckpt"), str(DDTI_IMAGE),
                               str(run / f"pred-{code}-{n}-{r}"), "--samples", str(members), "--sampler", "ddpm",
                               "--steps", str(n), "--fusion", "staple", f"sample.spacing={grid}", *fast,
                               micro[code]]  # fmt: skip
                    start = time.perf_counter()
                    subprocess.run(command, check=True, env=_env(src), capture_output=True)
                    sec = time.perf_counter() - start
                    shown = " ".join(["diffuseg predict CKPT IMAGE OUT", *command[command.index("--samples") :]])
                    times.setdefault((code, shown), []).append(sec)
                    print(f"cli ({code}): {shown}: {sec:.1f} s", flush=True)
    for (code, shown), secs in times.items():
        rows.append([code, f"`{shown}`", sorted(secs)[len(secs) // 2], " ".join(f"{v:.1f}" for v in secs)])
    rows.append(["", "load at the end (1/5/15 min)", load_average(), ""])
    return markdown_table(["code", "command", "s wall, median (new process, end to end)", "each run"], rows)


def _env(src: Path) -> dict[str, str]:
    """The environment of a CLI run from ``src``: the CLI chooses its threads from ``--threads``."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    env.pop("OMP_NUM_THREADS", None)
    return env
