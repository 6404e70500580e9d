"""The official MedSegDiff code next to ours, in one process: network call and one sampling step.

    .venv/bin/python benchmarks/speed/official.py --official PATH/TO/MedSegDiff         # -> results/official.md
    .venv/bin/python benchmarks/speed/official.py --official PATH --quick                        # 64 px smoke check

``PATH`` is a local checkout of the official MedSegDiff repository (its ``guided_diffusion`` package is imported
from there; nothing of it is copied here). Its network is built with the README's MedSegDiff-B flags
(``--image_size 256 --num_channels 128 --class_cond False --num_res_blocks 2 --num_heads 1 --learn_sigma True
--use_scale_shift_norm False --attention_resolutions 16 --diffusion_steps 1000 --noise_schedule linear
--rescale_learned_sigmas False --rescale_timesteps False``) for a one-channel image (``in_ch = 2``: the image and
the noisy mask, as its sampling script concatenates them), random weights. Ours: ``medsegdiff-b`` at the same
size. For each: parameters, FLOPs per call (``torch.utils.flop_counter``, as speed.py counts them), s per network
call (batch 1) and per sampling step (its ``GaussianDiffusion.p_sample``; our DDPM sampler with one step), in
fp32 and in bf16 autocast where the CPU computes bf16 natively, interleaved (official, ours, official, ours) and
the best of the rounds kept; achieved FLOP/s against the measured matmul peak of the same dtype.

The official package imports modules its network call and ``p_sample`` never run (``torchvision``'s image
saving and transforms, ``blobfile`` file I/O, ``batchgenerators``' padding for sliding-window inference).
Where one of them is not installed the script puts an empty stand-in module in its place that raises if
anything of it is used, and the result file lists each stand-in; ``--no-stand-ins`` fails instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import sys
import time
import types
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
from common import RESULTS, load_average, machine, markdown_table, print_machine, time_call, write_markdown

from diffuseg.config import DiffusionConfig
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.diffusion.samplers import sample as run_sampler
from diffuseg.nets.registry import build_network
from diffuseg.runtime import native_bf16, use_threads

B_FLAGS = dict(
    num_channels=128, class_cond=False, num_res_blocks=2, num_heads=1, learn_sigma=True,
    use_scale_shift_norm=False, attention_resolutions="16", diffusion_steps=1000, noise_schedule="linear",
    rescale_learned_sigmas=False, rescale_timesteps=False,
)  # fmt: skip
UNUSED_IMPORTS = ("torchvision", "torchvision.utils", "torchvision.transforms", "blobfile", "batchgenerators",
                  "batchgenerators.augmentations", "batchgenerators.augmentations.utils")  # fmt: skip


class OfficialMissing(SystemExit):
    """The checkout or one of its dependencies is missing: one clear line, exit 2."""

    def __init__(self, message: str):
        print(f"error: {message}", file=sys.stderr)
        super().__init__(2)


class _StandIn(types.ModuleType):
    """A module the official code imports but the timed path never uses: any attribute is a callable that
    raises, so a use would fail loudly instead of silently measuring something else."""

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def unavailable(*args, **kwargs):
            raise RuntimeError(f"{self.__name__}.{name} is a stand-in (the package is not installed)")

        return unavailable


def stand_ins(allowed: bool) -> list[str]:
    """Install ``_StandIn`` modules for the missing ``UNUSED_IMPORTS``; returns their top-level names."""
    missing = sorted({m.split(".")[0] for m in UNUSED_IMPORTS if importlib.util.find_spec(m.split(".")[0]) is None})
    if missing and not allowed:
        raise OfficialMissing(f"the official code imports {', '.join(missing)}, not installed (pip install them)")
    for name in UNUSED_IMPORTS:
        if name.split(".")[0] in missing:
            sys.modules[name] = _StandIn(name)
            parent, _, child = name.rpartition(".")
            if parent:
                setattr(sys.modules[parent], child, sys.modules[name])
    return missing


def load_official(path: Path, size: int, allowed: bool):
    """(network, diffusion, stand-ins) of the checkout at ``path``, MedSegDiff-B flags at ``size`` px."""
    if not (path / "guided_diffusion" / "script_util.py").is_file():
        raise OfficialMissing(f"{path}: not a MedSegDiff checkout (no guided_diffusion/script_util.py)")
    missing = stand_ins(allowed)
    sys.path.insert(0, str(path.resolve()))
    try:
        script_util = importlib.import_module("guided_diffusion.script_util")
    except ImportError as err:
        raise OfficialMissing(f"{path}: the official code needs {err.name}, not installed ({err})") from None
    args = script_util.model_and_diffusion_defaults()
    args.update(B_FLAGS, image_size=size, in_ch=2)  # one image channel + the noisy mask
    torch.manual_seed(0)
    net, diffusion = script_util.create_model_and_diffusion(**args)
    return net.eval(), diffusion, missing


def flops(fn) -> int:
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def peak(n: int, dtype: torch.dtype) -> float:
    """Best FLOP/s of an n x n matmul and of a 3x3 convolution (n / 16 channels at 64 x 64, oneDNN): on AMD CPUs
    torch's fp32 matmul can run far below what oneDNN's convolutions reach, so the better of the two is the peak."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    best = 2 * n**3 / time_call(lambda: a @ b, warmup=1, repeats=8, max_seconds=20)["best"]
    c = max(16, n // 16)
    x, w = torch.randn(1, c, 64, 64).to(dtype), torch.randn(c, c, 3, 3).to(dtype)
    conv = 2 * c * c * 9 * 64 * 64 / time_call(lambda: torch.conv2d(x, w, padding=1), warmup=1, repeats=8)["best"]
    return max(best, conv)


def autocast(bf16: bool) -> contextlib.AbstractContextManager:
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--official", type=Path, required=True, help="local checkout of the official MedSegDiff")
    parser.add_argument("--quick", action="store_true", help="64 px: a smoke check in seconds")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: diffuseg's policy)")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best is kept")
    parser.add_argument("--no-stand-ins", action="store_true", help="fail when an unused import is missing")
    args = parser.parse_args(argv)
    use_threads(args.threads)
    size = 64 if args.quick else 256
    theirs, diffusion, missing = load_official(args.official, size, not args.no_stand_ins)
    info = machine()
    info["command"] = "official.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print_machine(info)
    ours = build_network("medsegdiff-b", 1, **({"base_channels": 8} if args.quick else {})).eval()
    process = DiffusionProcess(DiffusionConfig())
    gen = torch.Generator().manual_seed(0)
    image, x = torch.randn(1, 1, size, size, generator=gen), torch.randn(1, 1, size, size, generator=gen)
    t_theirs, t_ours = torch.tensor([500]), torch.full((1,), 0.5)
    both = torch.cat([image, x], dim=1)
    gens = [torch.Generator().manual_seed(1)]
    work = {
        ("official", "network call"): lambda: theirs(both, t_theirs),
        ("official", "sampling step"): lambda: diffusion.p_sample(theirs, both, t_theirs),
        ("ours", "network call"): lambda: ours(x, t_ours, image),
        ("ours", "sampling step"): lambda: run_sampler("ddpm", ours, image, process, 1, generator=gens, members=1),
    }
    counted = {k: flops(fn) for k, fn in work.items()}
    precisions = (False, True) if native_bf16("cpu") else (False,)
    peaks = {bf16: peak(512 if args.quick else 4096, torch.bfloat16 if bf16 else torch.float32) for bf16 in precisions}
    best: dict[tuple, float] = {}
    for _ in range(args.rounds):
        for bf16 in precisions:
            for key, fn in work.items():  # official, ours, official, ours

                def call(fn=fn, bf16=bf16):
                    with torch.inference_mode(), autocast(bf16):
                        fn()

                sec = time_call(call, warmup=1, repeats=1)["best"]
                best[(*key, bf16)] = min(best.get((*key, bf16), float("inf")), sec)
                print(f"{key[0]} {key[1]} bf16={bf16}: {sec:.3f} s", flush=True)
    params = {
        "official": sum(p.numel() for p in theirs.parameters()),
        "ours": sum(p.numel() for p in ours.parameters()),
    }
    rows = []
    for (code, what), n in counted.items():
        for bf16 in precisions:
            sec = best[(code, what, bf16)]
            dtype = "bf16 autocast" if bf16 else "fp32"
            rows.append([code, what, params[code] / 1e6, n / 1e9, dtype, sec, n / sec / 1e9,
                         f"{100 * n / sec / peaks[bf16]:.0f}%"])  # fmt: skip
    ratio = {
        bf16: best[("official", "network call", bf16)] / best[("ours", "network call", bf16)] for bf16 in precisions
    }
    table = markdown_table(["code", "what", "params (M)", "GFLOP", "precision", "s (best)", "GFLOP/s", "of peak"], rows)
    notes = (
        f"\n{size} x {size} px, batch 1, random weights; {args.rounds} interleaved rounds. Peak (the better of an "
        "n x n matmul and a 256-channel 3x3 convolution, measured before and after): "
        + ", ".join(f"{'bf16' if b else 'fp32'} {v / 1e9:.0f} GFLOP/s" for b, v in peaks.items())
        + ". Official network call / ours: "
        + ", ".join(f"{r:.1f}x ({'bf16' if b else 'fp32'})" for b, r in ratio.items())
        + f". Load average at the end: {load_average()}.\n"
        + (f"\nStand-in modules for imports the timed path does not use: {', '.join(missing)}.\n" if missing else "")
    )
    out = RESULTS / ("official-quick.md" if args.quick else "official.md")
    write_markdown(
        out, "Official MedSegDiff code against ours", info, [("One network call and one step", table + notes)]
    )
    print(f"took {time.process_time():.0f} s CPU", flush=True)


if __name__ == "__main__":
    main()
