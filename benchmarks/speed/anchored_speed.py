"""What a fused 25-member ensemble of one 256 px image costs: anchored diffusion against MedSegDiff-B.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speed/anchored_speed.py            # -> results/anchored-speed.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speed/anchored_speed.py --quick    # smoke check, 64 px

Both models are built from their DDTI presets (``medsegdiff-b-ddti``, ``anchored-ddti``) with random weights
(speed does not depend on them) and draw the whole ensemble as ``predict`` does (``methods.make_draw``,
``inference.ensemble.sample_ensembles``: members, fusion by STAPLE, uncertainty), both with one sampler: DDPM
with 5 steps on the quadratic grid (the presets themselves run 100 DDPM and 10 DDIM steps). Network calls are
counted; the two models are timed in turn, round after round, and the best round of each is kept, so that load
from other processes falls on both alike.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
from common import RESULTS, machine, markdown_table, print_machine, time_call, write_markdown

from diffuseg.config import Config
from diffuseg.errors import UserError
from diffuseg.inference.ensemble import prepare_network, sample_ensembles
from diffuseg.methods import build_network, build_process, make_draw
from diffuseg.presets import load_config

HEAD, PATCH = "anchored.head_channels=", "anchored.head_patch="
MODELS = {  # name: (preset, overrides)
    "MedSegDiff-B": ("medsegdiff-b-ddti", []),
    "anchored diffusion (UNet trunk, head 16-32-64-64)": ("anchored-ddti", [f"{HEAD}[16,32,64,64]", f"{PATCH}1"]),
    "anchored diffusion (UNet trunk, head 8-16-32-32)": ("anchored-ddti", [f"{HEAD}[8,16,32,32]", f"{PATCH}1"]),
    "anchored diffusion (UNet trunk, head 8-16-32-32 on 2 x 2 patches)": (
        "anchored-ddti",
        [f"{HEAD}[8,16,32,32]", f"{PATCH}2"],
    ),
}
SAMPLERS = {"DDPM, 5 steps, quadratic grid": ["sample.sampler=ddpm", "sample.steps=5", "sample.spacing=quadratic"]}


def ensemble_cost(config: Config, image: torch.Tensor) -> tuple[Callable[[], None], dict[str, int]]:
    """A function drawing and fusing the ensemble of ``image`` (1, S, S), and the network calls it makes."""
    torch.manual_seed(0)
    net = prepare_network(build_network(config).eval().requires_grad_(False), config.sample, "cpu")
    calls = {"rows": 0, "calls": 0}

    def progress(rows: int) -> None:
        calls["rows"] += rows
        calls["calls"] += 1

    draw = make_draw(config, net, build_process(config), progress)

    def run() -> None:
        list(sample_ensembles(draw, [("case", image)], config.sample, scheme=config.data.scheme))

    return run, calls


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="64 px, 5 members, one round")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each model is kept")
    args = parser.parse_args(argv)
    size, members, rounds = (64, 5, 1) if args.quick else (256, 25, args.rounds)
    info = machine()
    print_machine(info)
    settings = SAMPLERS
    rows = []
    for label, overrides in settings.items():
        runs = {}
        for name, (preset, options) in MODELS.items():
            sizes = [f"data.image_size={size}", f"sample.samples={members}", f"sample.batch_size={members}"]
            config = load_config(preset, [*sizes, "sample.precision=32", *options, *overrides])
            runs[name] = (config, *ensemble_cost(config, torch.rand(1, size, size)))
        best = {name: float("inf") for name in runs}
        warmup = 0 if args.quick else 1
        per_run: dict[str, dict[str, int]] = {}
        for _ in range(rounds):
            for name, (_, run, calls) in runs.items():
                calls.update(rows=0, calls=0)
                best[name] = min(best[name], time_call(run, warmup=warmup, repeats=1)["best"])
                per_run[name] = {k: v // (warmup + 1) for k, v in calls.items()}  # every run draws alike
        base = best["MedSegDiff-B"]
        for name, (config, _, _) in runs.items():
            s = config.sample
            calls = per_run[name]
            rows.append([label, name, f"{s.sampler} {s.steps} ({s.spacing})", calls["calls"], calls["rows"],
                         best[name], best[name] / base])  # fmt: skip
            print(rows[-1], flush=True)
    table = markdown_table(
        ["sampler", "model", "as run", "network calls", "member-steps", "s per case (best)", "vs MedSegDiff-B"], rows
    )
    notes = (
        f"\n{members} members of one {size} px image, drawn, fused by STAPLE and given an uncertainty map as `predict` "
        "does, fp32, the machine's torch threads. Network calls: MedSegDiff-B's member calls (its image encoder "
        "runs once per call), anchored diffusion's head calls (its trunk runs once per call, not counted). "
        "Random weights.\n"
    )
    out = RESULTS / ("anchored-speed-quick.md" if args.quick else "anchored-speed.md")
    write_markdown(out, "Anchored diffusion against MedSegDiff-B: one 25-member ensemble", info,
                   [("Seconds per case", table + notes)])  # fmt: skip


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
