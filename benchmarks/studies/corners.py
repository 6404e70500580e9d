"""Does a trained model favour one corner? Counts over several training seeds.

    .venv/bin/python benchmarks/studies/corners.py --seeds 8  # the demo preset, 8 seeds -> results/corners.md
    .venv/bin/python benchmarks/studies/corners.py --seeds 2 --steps 20    # smoke check
    .venv/bin/python benchmarks/studies/corners.py --seeds 1 --flip-data #every item mirrored left-right, train and test
    .venv/bin/python benchmarks/studies/corners.py --seeds 4 --mirror-init # every initial kernel mirrored left-right
    .venv/bin/python benchmarks/studies/corners.py --seeds 8 --set model.options.padding=partial #another preset option
    .venv/bin/python benchmarks/studies/corners.py --seeds 4 --fill  # scores and x_hat for seeds saved without them
    .venv/bin/python benchmarks/studies/corners.py --seeds 4 --sampler-steps 50   # the same models, a finer sampler

Each seed trains the ``demo`` preset on the bundled LIDC subset (``train.seed`` = seed; everything else as
``diffuseg demo``), draws ``sample.samples`` masks for each held-out slice (the demo's validation patients)
and counts, per corner, the samples with any foreground in the corner square of side 1/8 of the image. If the
model treats the corners alike, the four counts summed over seeds are draws of one multinomial with equal
probabilities; the chi-square test of that (3 degrees of freedom) is reported with its p-value, and the
per-seed counts show whether one corner wins across seeds or only within one model.

The samples of one model are not independent draws (a model that puts foreground in one corner does so for
many images), so the pooled chi-square overstates the evidence. The test that fits is across seeds: if
training treats the corners alike, each seed's four counts are as likely as any of their 8 rearrangements by
the symmetries of the square (flips, turns, transposes). The randomisation test draws one symmetry per seed
at random 100,000 times and reports how often the pooled chi-square is at least the one observed.
Dice, HD95 (fused mask against each annotator, mean over slices) and GED over the 8 samples are reported per
seed beside the counts, so that a change meant to remove corner foreground is seen at its cost in accuracy,
and so is the network's estimate x_hat at the 4 corner pixels at the sampler's first and last step: how sure
the model is that a corner is background before and after the noise has been removed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "quality"))  # quality/ modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
import quality as Q
from common import RESULTS, machine, markdown_table, print_machine, write_markdown

from diffuseg.checkpoint import LAST
from diffuseg.demo import DEMO_DATA, demo_config
from diffuseg.diffusion.process import DiffusionProcess
from diffuseg.errors import UserError
from diffuseg.files import write_text_atomic

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")
# The 8 symmetries of the square as permutations of CORNERS: identity, flips left-right and up-down, turn by
# 180 degrees, transpose, anti-transpose, and the two quarter turns.
SYMMETRIES = (
    (0, 1, 2, 3),
    (1, 0, 3, 2),
    (2, 3, 0, 1),
    (3, 2, 1, 0),
    (0, 2, 1, 3),
    (3, 1, 2, 0),
    (1, 3, 0, 2),
    (2, 0, 3, 1),
)
SCORES = ("dice", "hd95", "ged_biased_8")
COUNTED = ("samples", "fused", "n_samples", "n_fused", "train_min")  # what a --fill keeps


def corner_hits(masks: torch.Tensor, fraction: float = 1 / 8) -> np.ndarray:
    """masks (N, H, W) {0, 1} -> (4,) how many masks have foreground in each corner square (order ``CORNERS``)."""
    h, w = masks.shape[-2:]
    a, b = max(1, round(h * fraction)), max(1, round(w * fraction))
    squares = (masks[:, :a, :b], masks[:, :a, -b:], masks[:, -a:, :b], masks[:, -a:, -b:])
    return np.array([int(s.flatten(1).any(1).sum()) for s in squares])


def chi_square(totals: np.ndarray) -> np.ndarray:
    """(..., 4) corner totals -> (...) chi-square statistic against equal corners (0 where all are 0)."""
    expected = totals.sum(-1, keepdims=True) / 4
    return np.where(expected[..., 0] > 0, ((totals - expected) ** 2 / np.maximum(expected, 1e-12)).sum(-1), 0.0)


def symmetry_test(counts: np.ndarray, draws: int = 100_000, seed: int = 0) -> float:
    """counts (seeds, 4) -> p-value of the seed-level randomisation test (module docstring)."""
    rng = np.random.default_rng(seed)
    perms = np.asarray(SYMMETRIES)[rng.integers(0, len(SYMMETRIES), (draws, len(counts)))]  # (draws, seeds, 4)
    totals = np.take_along_axis(np.broadcast_to(counts, perms.shape), perms, axis=-1).sum(1)
    return float((chi_square(totals) >= chi_square(counts.sum(0)) - 1e-9).mean())


@contextlib.contextmanager
def recording_corner_estimates(store: list[torch.Tensor]) -> Iterator[None]:
    """While active, every sampler step appends the mean over its rows of x_hat at the 4 corner pixels
    (order ``CORNERS``; -1 is background, +1 foreground) to ``store``."""
    denoise = DiffusionProcess.denoise

    def recording(self, *args, **kwargs):
        x0 = denoise(self, *args, **kwargs)
        store.append(x0[:, 0, [0, 0, -1, -1], [0, -1, 0, -1]].float().mean(0))
        return x0

    DiffusionProcess.denoise = recording
    try:
        yield
    finally:
        DiffusionProcess.denoise = denoise


def run_seed(seed: int, steps: int | None, out: Path, overrides: list[str], sampler_steps: int | None = None) -> dict:
    extra = [f"train.seed={seed}", f"sample.seed={seed}", "train.precision=32-true", *overrides]
    config = demo_config(out / f"seed-{seed}", DEMO_DATA, steps, extra)
    ckpt, train_min = Q.ensure_trained(config)
    cases = Q.val_cases(config, 10_000)
    sampler_steps = sampler_steps or config.sample.steps
    estimates: list[torch.Tensor] = []
    with recording_corner_estimates(estimates):
        results = Q.ensembles(ckpt, cases, steps=sampler_steps)
    corner_x0 = torch.stack(estimates).view(-1, sampler_steps, 4).mean(0)  # (steps, 4), calls by step
    samples = torch.cat([r.samples[:, 0] for r in results])
    fused = torch.cat([r.fused for r in results])
    scores = Q.score(results, cases, ged_sizes=(8,))
    return {"samples": corner_hits(samples).tolist(), "fused": corner_hits(fused).tolist(),
            "n_samples": int(samples.shape[0]), "n_fused": int(fused.shape[0]), "train_min": train_min,
            "scores": {k: scores[k] for k in SCORES}, "corner_x0": corner_x0.tolist()}  # fmt: skip


def report(rows: dict[int, dict], info: dict, name: str = "corners", overrides: Sequence[str] = ()) -> Path:
    sections = []
    for kind in ("samples", "fused"):
        table = [[seed, *r[kind], r[f"n_{kind}"]] for seed, r in sorted(rows.items())]
        total = np.sum([r[kind] for r in rows.values()], axis=0)
        table.append(["all", *total.tolist(), sum(r[f"n_{kind}"] for r in rows.values())])
        body = markdown_table(["seed", *CORNERS, f"{kind} in all"], table)
        if total.sum() > 0:
            chi2, p = stats.chisquare(total)
            p_seeds = symmetry_test(np.array([r[kind] for r in rows.values()]))
            body += (
                f"\nPooled chi-square against equal corners: {chi2:.2f} (3 d.o.f.), p = {p:.3g} (samples taken as "
                f"independent). Seed-level randomisation test over the square's symmetries: p = {p_seeds:.3g}.\n"
            )
        sections.append((f"{kind.capitalize()} with foreground in a corner square (side 1/8)", body))
    scored = {seed: r["scores"] for seed, r in sorted(rows.items()) if "scores" in r}
    if scored:
        table = [[seed, *(f"{v[k]:.4f}" for k in SCORES)] for seed, v in scored.items()]
        values = np.array([[v[k] for k in SCORES] for v in scored.values()])
        if len(values) > 1:
            spread = zip(values.mean(0), values.std(0, ddof=1))
            table.append(["mean ± sd", *(f"{m:.4f} ± {sd:.4f}" for m, sd in spread)])
        sections.append(("Accuracy on the held-out slices (fused Dice and HD95 in pixels, GED over 8 samples)",
                         markdown_table(["seed", *SCORES], table)))  # fmt: skip
    probed = {seed: np.array(r["corner_x0"]) for seed, r in sorted(rows.items()) if "corner_x0" in r}
    if probed:
        table = [[seed, *(f"{v:.3f}" for v in x[0]), *(f"{v:.3f}" for v in x[-1])] for seed, x in probed.items()]
        heads = [f"{c}, first step" for c in CORNERS] + [f"{c}, last step" for c in CORNERS]
        sections.append(("The network's x_hat at the corner pixels (mean over all samples; -1 is background)",
                         markdown_table(["seed", *heads], table)))  # fmt: skip
    path = RESULTS / f"{name}.md"
    title = "Corner symmetry of the trained demo model"
    title += ", every item mirrored left-right" if "flipped" in name else ""
    title += ", every initial kernel mirrored left-right" if "mirrored-init" in name else ""
    title += "".join(f", {o}" for o in overrides)
    write_markdown(path, title, info, sections)
    return path


def flip_every_item() -> None:
    """Mirror every dataset item (image and masks) left-right, for training and held-out slices alike: if the
    corner preference came from the data, it would move to the other side."""
    from diffuseg.data import dataset

    item = dataset.SegmentationDataset._item

    def mirrored(self, index: int) -> dict:
        out = item(self, index)
        return out | {k: out[k].flip(-1).contiguous() for k in ("image", "masks", "mask")}

    dataset.SegmentationDataset._item = mirrored


def mirror_every_initial_kernel() -> None:
    """Start training from the mirror image of each seed's initial network (every spatial kernel flipped
    left-right; the centred UNet then computes the mirrored function), with data, batches and noise unchanged:
    if the corner preference came from the initial weights, it would move to the other side."""
    from diffuseg import methods
    from diffuseg.training import module

    build = methods.build_network

    def mirrored(config):
        net = build(config)
        with torch.no_grad():
            for m in net.modules():
                if isinstance(m, torch.nn.Conv2d) and m.kernel_size[1] > 1:
                    m.weight.copy_(m.weight.flip(-1))
        return net

    module.build_network = mirrored  # the network the Lightning module trains (the meta check keeps the original)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="training seeds 0..N-1")
    parser.add_argument("--steps", type=int, help="training steps (default: the demo preset's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flip-data", action="store_true", help="mirror every item left-right (runs/corners-flipped)")
    parser.add_argument("--mirror-init", action="store_true", help="mirror every initial kernel left-right")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a further override")
    parser.add_argument("--sampler-steps", type=int, help="sampler steps (default: the preset's); same trained runs")
    parser.add_argument(
        "--fill", action="store_true", help="add scores and corner estimates to saved seeds whose run is still there"
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    print_machine(info)
    # a smoke check (--steps) trains in its own runs and writes its own page, never over the real ones
    name = "corners" + ("-flipped" if args.flip_data else "") + ("-mirrored-init" if args.mirror_init else "")
    name += "".join(f"-{key.rpartition('.')[2]}-{value}" for key, _, value in (o.partition("=") for o in args.set))
    name += "-smoke" if args.steps else ""
    runs = name  # the trained models; another sampler reuses them
    name += f"-sampler-steps-{args.sampler_steps}" if args.sampler_steps else ""
    if args.flip_data:
        flip_every_item()
    if args.mirror_init:
        mirror_every_initial_kernel()
    out = Path(__file__).resolve().parents[2] / "runs" / runs
    saved = RESULTS / name / "counts.json"
    rows = {int(k): v for k, v in json.loads(saved.read_text()).items()} if saved.exists() and not args.steps else {}
    for seed in range(args.seeds):
        trained = (out / f"seed-{seed}" / "run" / "checkpoints" / LAST).exists()
        if seed in rows and args.fill and trained and not {"scores", "corner_x0"} <= set(rows[seed]):
            rows[seed] = run_seed(seed, args.steps, out, args.set, args.sampler_steps) | {
                k: rows[seed][k] for k in COUNTED
            }
        elif seed not in rows:
            rows[seed] = run_seed(seed, args.steps, out, args.set, args.sampler_steps)
        else:
            continue
        print("seed", seed, {k: v for k, v in rows[seed].items() if k != "corner_x0"}, flush=True)
        if not args.steps:  # a smoke check's counts are not kept
            saved.parent.mkdir(parents=True, exist_ok=True)
            write_text_atomic(saved, json.dumps(rows, indent=1))
    print("wrote", report(rows, info, name, args.set))


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
