"""Yardsticks at matched inference cost for the DDTI learning curves: the UNet with test-time augmentation, and
the average of a diffusion ensemble with the UNet (Fu et al. 2023, arXiv:2303.06040, ensemble diffusion with the
UNet), scored on the same validation patients as ``learning_curve.py --task ddti-anchored``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality/yardsticks.py          # -> results/yardsticks.md
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality/yardsticks.py --quick  # the quick budget's runs

It reads the task's run folders as they stand (each holds the checkpoint of its last finished budget) and scores,
per case: the UNet (one pass); the UNet with the mean of its probabilities over the 8 symmetries of the square
(flips and 90-degree turns: 8 network calls); each anchored model's 25-member ensemble (STAPLE, as the curves
score it); and the mean of that ensemble's soft members averaged with the UNet's probability, thresholded at 0.5.
Network calls per case are listed beside each Dice. Paired per-case differences against the UNet come with a 95 %
bootstrap interval over cases.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
import learning_curve as LC
import quality as Q
from common import RESULTS, machine, markdown_table, paired, print_machine, run_main, write_markdown

from diffuseg.checkpoint import LAST, read_checkpoint
from diffuseg.errors import UserError
from diffuseg.evaluation.metrics import dice
from diffuseg.inference.tta import TRANSFORMS, dihedral, undo
from diffuseg.methods import load_for_inference


@torch.no_grad()
def unet_probabilities(ckpt: Path, cases, tta: bool) -> list[torch.Tensor]:
    """The UNet's foreground probability (H, W) per case, or its mean over the 8 symmetries (``inference.tta``)."""
    _, net, _ = load_for_inference(ckpt)
    probs = []
    for _, image, _ in cases:
        views = range(TRANSFORMS) if tta else [0]
        probs.append(
            torch.stack([undo(torch.sigmoid(net(dihedral(image[None], t)).float()), t)[0, 0] for t in views]).mean(0)
        )
    return probs


def case_dice(masks: list[torch.Tensor], cases) -> np.ndarray:
    """Dice of each case's mask (H, W) against its annotator (DDTI: one)."""
    return np.array([float(dice(m.bool(), gt[0].bool())) for m, (_, _, gt) in zip(masks, cases)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="the quick budget's runs")
    parser.add_argument("--data", type=Path, default=Q.DATA, help="folder holding ddti/ (../shared/data)")
    args = parser.parse_args(argv)
    Q.DATA = args.data
    b = LC.QUICK if args.quick else LC.BUDGET
    info = machine()
    print_machine(info)
    unet, *anchored = LC.ddti_anchored_models(b, args.quick)
    config = LC.model_config(b, unet, unet.points[-1])
    ckpt = Path(config.train.out_dir) / "checkpoints" / LAST
    if not ckpt.exists():
        raise UserError(f"{ckpt}: no UNet run yet; run learning_curve.py --task ddti-anchored first")
    cases = Q.val_cases(config, b.ddti_cases)
    steps = int(read_checkpoint(ckpt)["diffuseg"]["global_step"])
    p_unet, p_tta = unet_probabilities(ckpt, cases, False), unet_probabilities(ckpt, cases, True)
    base = case_dice([p > 0.5 for p in p_unet], cases)
    rows = [["deterministic UNet", steps, 1, 100 * base.mean(), "—"]]
    tta = case_dice([p > 0.5 for p in p_tta], cases)
    rows.append(["UNet, mean over the 8 symmetries", steps, 8, 100 * tta.mean(), paired(tta, base)])
    sampling = {"samples": b.members, **LC.DDTI_SAMPLING}
    for model in anchored:
        mckpt = Path(LC.model_config(b, model, model.points[-1]).train.out_dir) / "checkpoints" / LAST
        if not mckpt.exists():
            continue
        msteps = int(read_checkpoint(mckpt)["diffuseg"]["global_step"])
        results = Q.ensembles(mckpt, cases, **sampling)
        fused = case_dice([r.fused[0] for r in results], cases)
        calls = b.members * LC.DDTI_SAMPLING["steps"]
        rows.append([model.label, msteps, f"1 + {calls}", 100 * fused.mean(), paired(fused, base)])
        both = [(r.soft[:, 0].mean(0) + p) / 2 > 0.5 for r, p in zip(results, p_unet)]
        avg = case_dice(both, cases)
        rows.append([f"{model.label} averaged with the UNet", f"{msteps} + {steps}", f"2 + {calls}",
                     100 * avg.mean(), paired(avg, base)])  # fmt: skip
        print(rows[-2], rows[-1], flush=True)
    table = markdown_table(["model", "training steps", "network calls per case", "Dice %",
                            "paired difference vs the UNet, Dice points [95 % CI]"], rows)  # fmt: skip
    note = (
        f"\n{len(cases)} images of DDTI validation patients (a seeded 20 % of patients), 64 px, as "
        "`learning_curve.py --task ddti-anchored` scores them; each run at the last budget it finished.\n"
    )
    out = RESULTS / ("yardsticks-quick.md" if args.quick else "yardsticks.md")
    write_markdown(out, "Yardsticks at matched inference cost (DDTI)", info, [("Dice", table + note)])


if __name__ == "__main__":
    run_main(main)
