"""Does a trained model favour one corner? (issue 17, item 3) Counts over several training seeds.

    .venv/bin/python benchmarks/corners.py --seeds 8               # the demo preset, 8 seeds -> results/corners.md
    .venv/bin/python benchmarks/corners.py --seeds 2 --steps 20    # smoke check
    .venv/bin/python benchmarks/corners.py --seeds 1 --flip-data   # every item mirrored left-right, train and test

Each seed trains the ``demo`` preset on the bundled LIDC subset (``train.seed`` = seed; everything else as
``diffuseg demo``), draws ``sample.samples`` masks for each held-out slice (the demo's validation patients)
and counts, per corner, the samples with any foreground in the corner square of side 1/8 of the image. If the
model treats the corners alike, the four counts summed over seeds are draws of one multinomial with equal
probabilities; the chi-square test of that (3 degrees of freedom) is reported with its p-value, and the
per-seed counts show whether one corner wins across seeds or only within one model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality as Q
from common import RESULTS, machine, markdown_table, print_machine, write_markdown

from diffuseg.config import write_text_atomic
from diffuseg.demo import DEMO_DATA, demo_config
from diffuseg.errors import UserError

CORNERS = ("top-left", "top-right", "bottom-left", "bottom-right")


def corner_hits(masks: torch.Tensor, fraction: float = 1 / 8) -> np.ndarray:
    """masks (N, H, W) {0, 1} -> (4,) how many masks have foreground in each corner square (order ``CORNERS``)."""
    h, w = masks.shape[-2:]
    a, b = max(1, round(h * fraction)), max(1, round(w * fraction))
    squares = (masks[:, :a, :b], masks[:, :a, -b:], masks[:, -a:, :b], masks[:, -a:, -b:])
    return np.array([int(s.flatten(1).any(1).sum()) for s in squares])


def run_seed(seed: int, steps: int | None, out: Path) -> dict:
    extra = [f"train.seed={seed}", f"sample.seed={seed}", "train.precision=32-true"]
    config = demo_config(out / f"seed-{seed}", DEMO_DATA, steps, extra)
    ckpt, train_min = Q.ensure_trained(config)
    cases = Q.val_cases(config, 10_000)
    results = Q.draw_members(ckpt, cases)
    samples = torch.cat([r.samples[:, 0] for r in results])
    fused = torch.cat([r.fused for r in results])
    return {"samples": corner_hits(samples).tolist(), "fused": corner_hits(fused).tolist(),
            "n_samples": int(samples.shape[0]), "n_fused": int(fused.shape[0]), "train_min": train_min}  # fmt: skip


def report(rows: dict[int, dict], info: dict, name: str = "corners") -> Path:
    sections = []
    for kind in ("samples", "fused"):
        table = [[seed, *r[kind], r[f"n_{kind}"]] for seed, r in sorted(rows.items())]
        total = np.sum([r[kind] for r in rows.values()], axis=0)
        table.append(["all", *total.tolist(), sum(r[f"n_{kind}"] for r in rows.values())])
        body = markdown_table(["seed", *CORNERS, f"{kind} in all"], table)
        if total.sum() > 0:
            chi2, p = stats.chisquare(total)
            body += f"\nChi-square against equal corners: {chi2:.2f} (3 d.o.f.), p = {p:.3g}.\n"
        sections.append((f"{kind.capitalize()} with foreground in a corner square (side 1/8)", body))
    path = RESULTS / f"{name}.md"
    title = "Corner symmetry of the trained demo model" + (", every item mirrored left-right" if "flip" in name else "")
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


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="training seeds 0..N-1")
    parser.add_argument("--steps", type=int, help="training steps (default: the demo preset's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--flip-data", action="store_true", help="mirror every item left-right (runs/corners-flipped)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    info = machine()
    print_machine(info)
    # a smoke check (--steps) trains in its own runs and writes its own page, never over the real ones
    name = ("corners-flipped" if args.flip_data else "corners") + ("-smoke" if args.steps else "")
    if args.flip_data:
        flip_every_item()
    out = Path(__file__).resolve().parents[1] / "runs" / name
    saved = RESULTS / name / "counts.json"
    rows = {int(k): v for k, v in json.loads(saved.read_text()).items()} if saved.exists() and not args.steps else {}
    for seed in range(args.seeds):
        if seed not in rows:
            rows[seed] = run_seed(seed, args.steps, out)
            print("seed", seed, rows[seed], flush=True)
            if not args.steps:  # a smoke check's counts are not kept
                saved.parent.mkdir(parents=True, exist_ok=True)
                write_text_atomic(saved, json.dumps(rows, indent=1))
    print("wrote", report(rows, info, name))


if __name__ == "__main__":
    try:
        main()
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
