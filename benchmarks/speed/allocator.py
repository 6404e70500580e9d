"""What ``runtime.keep_freed_memory`` (glibc's malloc keeping freed memory for reuse) buys, training and sampling.

    .venv/bin/python benchmarks/speed/allocator.py            # -> results/allocator.md (~6 min on 2 cores)
    .venv/bin/python benchmarks/speed/allocator.py --quick    # smoke check, tiny sizes

Each measurement is a new process (the setting cannot be undone inside one), run with the default allocator and
with ``keep_freed_memory`` in turn, A B A B, so that load from other processes falls on both alike; the median
of ``--rounds`` is kept. Measured in each process after one warm-up: a training step (AdamW on
``DiffusionProcess.loss``, fp32 and bf16 autocast as Lightning's ``bf16-mixed`` runs it) of MedSegDiff-B at
256 px, batch 2, and of the ambiguity paper's diffusion UNet at 128 px, batch 8; and one sampling call of 25
MedSegDiff-B members at 256 px as ``predict`` prepares it (bf16 where native, channels_last,
``sample.micro_batch=5``), with the page faults (``ru_minflt``) of the measured calls. Weights are random: speed
does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
from common import RESULTS, machine, markdown_table, print_machine, write_markdown

CASES = {  # name: (kind, registry name, options, size, batch or members, bf16)
    "train MedSegDiff-B 256 px, batch 2, fp32": ("train", "medsegdiff-b", {}, 256, 2, False),
    "train MedSegDiff-B 256 px, batch 2, bf16 autocast": ("train", "medsegdiff-b", {}, 256, 2, True),
    "train diffusion UNet 128 px, batch 8, fp32": ("train", "diffusion-unet", {}, 128, 8, False),
    "sample MedSegDiff-B 256 px, 25 members, one call": ("sample", "medsegdiff-b", {}, 256, 25, True),
}
QUICK = {
    "train tiny MedSegDiff-B 64 px, batch 2, fp32": ("train", "medsegdiff-b", {"base_channels": 8}, 64, 2, False),
    "sample tiny MedSegDiff-B 64 px, 4 members": ("sample", "medsegdiff-b", {"base_channels": 8}, 64, 4, True),
}

CHILD = """
import json, resource, sys, time, torch
from diffuseg.config import DiffusionConfig, SampleConfig
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.inference.ensemble import prepare_network
from diffuseg.nets.registry import build_network
from diffuseg.runtime import keep_freed_memory, native_bf16, sampling_precision
kind, name, options, size, rows, bf16, keep, threads, calls = json.loads(sys.argv[1])
if keep:
    assert keep_freed_memory()
torch.set_num_threads(threads)
torch.manual_seed(0)
net = build_network(name, 1, **options)
gen = torch.Generator().manual_seed(0)
if kind == "train":
    process = DiffusionProcess(DiffusionConfig())
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    masks = (torch.rand(rows, 1, size, size, generator=gen) > 0.5).float()
    image = torch.randn(rows, 1, size, size, generator=gen)

    def call():
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = process.loss(net, masks, image, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
else:
    precision = "bf16" if bf16 and native_bf16("cpu") else "32"
    cfg = SampleConfig(precision=precision, channels_last=True, micro_batch=5)
    prepared = prepare_network(net, cfg, "cpu")
    x = torch.randn(rows, 1, size, size, generator=gen).contiguous(memory_format=torch.channels_last)
    t = torch.full((rows,), 0.5)
    image = torch.randn(1, 1, size, size, generator=gen).contiguous(memory_format=torch.channels_last)

    def call():
        with torch.inference_mode(), sampling_precision(torch.device("cpu"), precision):
            prepared(x, t, image)
call()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
start = time.perf_counter()
for _ in range(calls):
    call()
seconds = (time.perf_counter() - start) / calls
print(json.dumps([seconds, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults) / calls]))
"""


def measure(case: tuple, keep: bool, threads: int, calls: int) -> tuple[float, float]:
    """(seconds, page faults) per call of ``case`` in a new process."""
    out = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps([*case, keep, threads, calls])],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    seconds, faults = json.loads(out.stdout.strip().splitlines()[-1])
    return seconds, faults


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny networks: a smoke check in seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=3, help="measured calls per process, after one warm-up")
    args = parser.parse_args(argv)
    info = machine()
    print_machine(info)
    rows = []
    for label, case in (QUICK if args.quick else CASES).items():
        got: dict[bool, list[tuple[float, float]]] = {False: [], True: []}
        for _ in range(args.rounds):
            for keep in (False, True):
                got[keep].append(measure(case, keep, args.threads, args.calls))
                print(f"{label}, keep={keep}: {got[keep][-1][0]:.3f} s, {got[keep][-1][1]:.0f} faults", flush=True)
        before, after = (statistics.median(s for s, _ in got[k]) for k in (False, True))
        faults = [statistics.median(f for _, f in got[k]) for k in (False, True)]
        rows.append([label, before, after, before / after, faults[0], faults[1]])
    table = markdown_table(
        ["call", "s default allocator", "s freed memory kept", "speed-up", "page faults default", "page faults kept"],
        rows,
    )
    note = (
        f"\nMedian of {args.rounds} processes each (A B A B), {args.calls} calls per process after one warm-up, "
        f"{args.threads} torch threads; page faults per call.\n"
    )
    out = write_markdown(
        RESULTS / f"allocator{'-quick' if args.quick else ''}.md",
        "Freed memory kept for reuse (runtime.keep_freed_memory)",
        info,
        [("Training steps and sampling calls", table + note)],
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
