"""What ``padding: partial`` costs against the papers' zero padding, per network call.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speed/padding_speed.py            # -> results/padding-speed.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/speed/padding_speed.py --quick    # smoke check, tiny sizes

For each network (the demo preset's UNet at 64 px with its 8 members, the ambiguity paper's diffusion UNet at
128 px with 16 members, MedSegDiff-B at 256 px with 5 members) it times a sampling call (no autograd) and a
training step (forward, backward) with ``padding`` = zeros and partial, each with ``downsample: centred``, in
fp32 on ``--threads`` threads. The two paddings are timed in turn, round after round, and the best round
of each is kept, so that load from other processes falls on both alike. Weights are random: speed does not
depend on them.
"""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
from common import RESULTS, machine, markdown_table, print_machine, time_call, write_markdown

from diffuseg.errors import UserError
from diffuseg.nets.registry import build_network

DEMO = {"channels": [16, 16, 32, 64], "num_res_blocks": [1, 1, 2, 2], "middle_blocks": 1, "time_dim": 64}
CASES = {  # name: (registry name, options, image size, members)
    "demo UNet, 64 px x 8": ("diffusion-unet", DEMO, 64, 8),
    "diffusion UNet (paper), 128 px x 16": ("diffusion-unet", {}, 128, 16),
    "MedSegDiff-B, 256 px x 5": ("medsegdiff-b", {}, 256, 5),
}
QUICK = {"tiny UNet, 32 px x 4": ("diffusion-unet", {"channels": [8, 8, 16], "num_res_blocks": [1, 1, 1],
                                                     "middle_blocks": 1, "time_dim": 16}, 32, 4)}  # fmt: skip


def timings(name: str, options: dict, size: int, members: int, rounds: int) -> dict[str, dict[str, float]]:
    """{padding: {"call": s, "train": s}}, the best of ``rounds`` interleaved rounds."""
    torch.manual_seed(0)
    nets = {p: build_network(name, 1, **options, downsample="centred", padding=p) for p in ("zeros", "partial")}
    image, x_t = torch.rand(1, 1, size, size), torch.randn(members, 1, size, size)
    t = torch.full((members,), 0.5)

    def call(net):
        with torch.no_grad():
            net(x_t, t, image)

    def train(net):
        net.zero_grad(set_to_none=True)
        net(x_t, t, image).square().mean().backward()

    best = {p: {"call": float("inf"), "train": float("inf")} for p in nets}
    for _ in range(rounds):
        for p, net in nets.items():
            for kind, fn in (("call", call), ("train", train)):
                seconds = time_call(functools.partial(fn, net), warmup=1, repeats=2)["best"]
                best[p][kind] = min(best[p][kind], seconds)
    return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tiny network: a smoke check in seconds")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best of each is kept")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    print_machine(info)
    rows = []
    for label, case in (QUICK if args.quick else CASES).items():
        best = timings(*case, rounds=args.rounds)
        for kind in ("call", "train"):
            zeros, rescaled = best["zeros"][kind], best["partial"][kind]
            rows.append(
                [label, "sampling call" if kind == "call" else "training step", zeros, rescaled, rescaled / zeros]
            )
            print(*rows[-1], flush=True)
    table = markdown_table(["network", "what", "zeros (s)", "partial (s)", "partial / zeros"], rows)
    name = "padding-speed-quick" if args.quick else "padding-speed"
    write_markdown(RESULTS / f"{name}.md", "Cost of padding: partial", info, [("Seconds per call, best round", table)])


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
