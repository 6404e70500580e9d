"""The GPU path checked end to end in one script, under 10 minutes on one GPU.

    .venv/bin/python benchmarks/speed/gpu_check.py  # on a machine with a CUDA GPU -> results/gpu-check.md
    .venv/bin/python benchmarks/speed/gpu_check.py --cpu-dry-run   # the same steps on the CPU, tiny: checks the script

Steps, each a row of the result (ok / FAILED / skipped, with what was measured):
1. train the demo preset (``diffusion-unet`` on the bundled LIDC slices) a few steps with ``bf16-mixed`` on one
   GPU, then resume it to twice the steps (the checkpoint's step must continue);
2. predict the held-out slices as ensembles on the GPU and on the CPU from the same checkpoint and the same
   member noise (drawn on the CPU for both), fp32, and compare the fused masks: at least 99 % of pixels equal
   (the GPU's TF32 convolutions round differently); the GPU in bf16 autocast is reported against the same CPU
   result;
3. with two or more GPUs: the same training with ``--devices 2`` (DDP), which must finish and write a checkpoint;
4. time one MedSegDiff-B call at 256 px for 25 members of one image, and one fused 25-member ensemble
   (DDPM 5 steps on the quadratic grid) through ``sample_ensembles``, fp32 and bf16.

``--cpu-dry-run`` runs 1, 2 (CPU against CPU), and 4 at 64 px with a narrow network and says which GPU-only parts
it skipped; the result goes to ``gpu-check-dry-run.md``. It has not yet run on a GPU (docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
from common import RESULTS, machine, markdown_table, print_machine, write_markdown

from diffuseg.checkpoint import LAST, read_checkpoint
from diffuseg.config import Config, DiffusionConfig, SampleConfig
from diffuseg.demo import DEMO_DATA
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.inference.ensemble import prepare_network, sample_ensembles
from diffuseg.methods import diffusion_draw, load_for_inference, make_draw
from diffuseg.nets.registry import build_network
from diffuseg.presets import load_config
from diffuseg.training.run import train
from diffuseg.training.stream import build_datasets

REPO = Path(__file__).resolve().parents[2]


def demo_overrides(out: Path, steps: int, gpu: bool) -> list[str]:
    return [
        f"data.root={DEMO_DATA}",
        f"data.train_patients={DEMO_DATA / 'train_patients.txt'}",
        f"data.val_patients={DEMO_DATA / 'val_patients.txt'}",
        f"data.cache_dir={out / 'cache'}",
        f"train.out_dir={out / 'run'}",
        f"train.steps={steps}",
        "train.val_every=0",
        f"train.ckpt_every={steps}",
        f"train.precision={'bf16-mixed' if gpu else '32-true'}",
        f"train.accelerator={'gpu' if gpu else 'cpu'}",
        "train.devices=1",
    ]


def step_of(ckpt: Path) -> int:
    return int(read_checkpoint(ckpt)["diffuseg"]["global_step"])


def train_and_resume(out: Path, steps: int, gpu: bool) -> tuple[list, Path, Config]:
    config = load_config("demo", demo_overrides(out, steps, gpu))
    start = time.perf_counter()
    train(config)
    ckpt = Path(config.train.out_dir) / "checkpoints" / LAST
    first = step_of(ckpt)
    again = load_config("demo", demo_overrides(out, 2 * steps, gpu))
    train(again, resume=True)
    second = step_of(ckpt)
    ok = first == steps and second == 2 * steps
    detail = f"{config.train.precision}: step {first}, resumed to step {second} in {time.perf_counter() - start:.0f} s"
    return [["train a few steps, then resume", ok, detail]], ckpt, again


def ensembles(ckpt: Path, cases, device: str, precision: str) -> list:
    """Fused ensembles of ``cases`` on ``device``, member noise drawn on the CPU from the members' seeds."""
    config, net, process = load_for_inference(ckpt)
    cfg = SampleConfig(**{**config.sample.__dict__, "samples": 4, "batch_size": 8, "steps": 10,
                          "precision": precision})  # fmt: skip
    draw = make_draw(Config(**{**config.__dict__, "sample": cfg}), prepare_network(net, cfg, device), process)

    def cpu_noise(images, members, gens):
        return draw(images, members, [torch.Generator().manual_seed(g.initial_seed()) for g in gens])

    return list(sample_ensembles(cpu_noise, cases, cfg, device=device))


def compare(ckpt: Path, config: Config, out: Path, gpu: bool) -> list:
    _, val = build_datasets(config, out / "run")
    cases = [(val[i]["case_id"], val[i]["image"]) for i in range(min(4, len(val)))]
    ref = ensembles(ckpt, cases, "cpu", "32")
    device = "cuda" if gpu else "cpu"
    rows = []
    for precision, need in (("32", 0.99), ("bf16", None)):
        got = ensembles(ckpt, cases, device, precision)
        same = sum(float((a.fused == b.fused).float().mean()) for a, b in zip(ref, got)) / len(ref)
        ok = True if need is None else same >= need
        need_text = f", needs >= {100 * need:.0f} %" if need else " (reported only)"
        rows.append([f"ensemble on {device} ({precision}) vs CPU fp32", ok, f"{100 * same:.2f} % fused pixels equal"
                     f"{need_text}, {len(cases)} slices"])  # fmt: skip
    return rows


def ddp(out: Path) -> list:
    if torch.cuda.device_count() < 2:
        return [["DDP on 2 GPUs", "skipped", f"{torch.cuda.device_count()} GPU(s) here"]]
    run = out / "ddp"
    overrides = [o for o in demo_overrides(run, 8, True) if not o.startswith("train.devices")]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "diffuseg.cli", "train", "demo", *overrides, "--devices", "2"],
                          env=env, capture_output=True, text=True)  # fmt: skip
    ckpt = run / "run" / "checkpoints" / LAST
    ok = proc.returncode == 0 and ckpt.exists() and step_of(ckpt) == 8
    tail = proc.stderr.strip().splitlines()[-1:] if proc.returncode else []
    return [["DDP on 2 GPUs (8 steps)", ok, f"exit {proc.returncode} in {time.perf_counter() - start:.0f} s {tail}"]]


def timings(gpu: bool, dry: bool) -> list:
    device = torch.device("cuda" if gpu else "cpu")
    size, options = (64, {"base_channels": 8}) if dry else (256, {})
    torch.manual_seed(0)
    net = build_network("medsegdiff-b", 1, **options).to(device).eval()
    process = DiffusionProcess(DiffusionConfig())
    rows = []
    for precision in ("32", "bf16"):
        x, t = torch.randn(25, 1, size, size, device=device), torch.full((25,), 0.5, device=device)
        image = torch.randn(1, 1, size, size, device=device)
        ctx = torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16")
        with torch.inference_mode(), ctx:
            net(x, t, image)
            sync(device)
            start = time.perf_counter()
            net(x, t, image)
            sync(device)
        call = time.perf_counter() - start
        cfg = SampleConfig(sampler="ddpm", steps=5, spacing="quadratic", samples=25, batch_size=25, precision=precision,
                           micro_batch=0 if gpu else 1)  # fmt: skip
        draw = diffusion_draw(prepare_network(net, cfg, device), process, cfg)
        one = torch.randn(1, size, size)
        start = time.perf_counter()
        list(sample_ensembles(draw, [("case", one)], cfg, device=device))
        sync(device)
        rows.append([f"MedSegDiff-B {size} px ({precision})", True,
                     f"call of 25 members {call:.3f} s; fused 25-member ensemble, DDPM 5 quadratic "
                     f"{time.perf_counter() - start:.2f} s"])  # fmt: skip
    return rows


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-dry-run", action="store_true", help="the CPU-checkable parts, tiny, on the CPU")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.cpu_dry_run
    if not gpu and not args.cpu_dry_run:
        print("error: no CUDA GPU here; run with --cpu-dry-run to check the script on the CPU", file=sys.stderr)
        return 2
    info = machine()
    if gpu:
        info["gpu"] = f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}"
    info["command"] = "gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print_machine(info)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        rows, ckpt, config = train_and_resume(out, 2 if args.cpu_dry_run else 20, gpu)
        rows += compare(ckpt, config, out, gpu)
        rows += ddp(out) if gpu else [["DDP on 2 GPUs", "skipped", "--cpu-dry-run"]]
        rows += timings(gpu, args.cpu_dry_run)
    for row in rows:
        print(" | ".join(str(c) for c in row), flush=True)
    failed = [r for r in rows if r[1] is False]
    note = f"\n{len(failed)} check(s) failed; {time.perf_counter() - started:.0f} s in all.\n"
    name = "gpu-check-dry-run.md" if args.cpu_dry_run else "gpu-check.md"
    write_markdown(
        RESULTS / name, "GPU check", info, [("Checks", markdown_table(["check", "ok", "measured"], rows) + note)]
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
