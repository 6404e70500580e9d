"""Where the members part: the LIDC anchored task's diffusion models followed through the sampler, step by step.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/quality/spread.py   # -> results/spread-lidc.md, spread-lidc.png

It reads the run folders of ``learning_curve.py --task lidc-anchored`` as they stand (each holds the checkpoint of
its last finished budget) and, for the models that go on to 3,000 steps, draws 16 members of each of 16 validation
slices with the checkpoint's sampler (10-step DDIM), recording the network's estimate x_hat_0 at every call
(anchored diffusion: mu + r_hat). Per call it reports the members' spread, the mean distance 1 - IoU between two
members' x_hat_0 > 0 (``evaluation.metrics.diversity``, the curves' diversity of the final masks), and at the first
call (t = 1, pure noise) the estimate's confidence |x_hat_0| on the pixels where the annotators disagree (some but not
all mark them): 0 is a coin toss, 1 a certain mask. The anchored trunk's |mu| on those pixels is given beside it,
and the annotators' own spread on the same slices.
A member can only leave the others if the estimates it starts from are uncertain where the annotators are.
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
from common import RESULTS, fmt, line_plot, machine, markdown_table, print_machine, run_main, write_markdown

from diffuseg.checkpoint import LAST, read_checkpoint
from diffuseg.diffusion.process import masks_to_x0
from diffuseg.enums import Method
from diffuseg.evaluation.metrics import diversity
from diffuseg.methods import anchored_denoiser, class_probabilities, diffusion_draw, load_for_inference

CASES, MEMBERS = 16, 16


def traced_draw(ckpt: Path):
    """``draw(image (1, in, H, W)) -> (estimates, |mu| or None)``: the estimates x_hat_0 (K, H, W) of every network
    call of one K-member draw, in call order, and the anchored trunk's confidence map |mu| (H, W)."""
    config, net, process = load_for_inference(ckpt)
    net.eval()
    scheme, channels = config.data.scheme, config.data.scheme.channels

    def draw(image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor | None]:
        estimates: list[torch.Tensor] = []
        mu = None
        if config.method is Method.ANCHORED:
            denoiser, logits = anchored_denoiser(net, image, process, config.anchored.form, scheme, keep_estimate=True)
            mu = masks_to_x0(class_probabilities(logits, scheme))[0, 0].abs()

            def traced(z: torch.Tensor, t: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
                pred = denoiser(z, t, im)
                estimates.append(denoiser.estimate[:, 0])
                return pred
        else:

            def traced(z: torch.Tensor, t: torch.Tensor, im: torch.Tensor) -> torch.Tensor:
                pred = net(z, t, im)  # one time per call, shared by the rows
                x_hat = process.predict_x0(pred.float(), z[:, :channels].float(), float(t[0]), clip=False)
                estimates.append(x_hat[:, 0])
                return pred

        generators = [torch.Generator().manual_seed(k) for k in range(MEMBERS)]
        diffusion_draw(traced, process, config.sample, scheme)(image, MEMBERS, generators)
        return estimates, mu

    return draw


@torch.no_grad()
def follow(ckpt: Path, cases) -> dict[str, object]:
    """Per network call the members' spread (mean over cases), and the confidences at t = 1 where annotators
    disagree."""
    draw = traced_draw(ckpt)
    spreads, start, prior = [], [], []
    for _, image, masks in cases:
        estimates, mu = draw(image[None].float())
        share = masks.float().mean(0)
        torn = (share > 0) & (share < 1)
        spreads.append([diversity((x > 0).numpy()) for x in estimates])
        if torn.any():
            start.append(float(estimates[0].abs().mean(0)[torn].mean()))
            if mu is not None:
                prior.append(float(mu[torn].mean()))
    return {
        "spread": np.mean(spreads, axis=0),
        "start": float(np.mean(start)),
        "prior": float(np.mean(prior)) if prior else None,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=Q.DATA, help="folder holding lidc/ (../shared/data)")
    args = parser.parse_args(argv)
    Q.DATA = args.data
    b = LC.BUDGET
    info = machine()
    print_machine(info)
    models = [m for m in LC.lidc_anchored_models(b, False) if m.family == "diffusion" and m.points[-1] == 3000]
    rows, series, cases = [], {}, None
    for model in models:
        config = LC.model_config(b, model, model.points[-1])
        ckpt = Path(config.train.out_dir) / "checkpoints" / LAST
        if not ckpt.exists():
            print(f"{model.label}: no run yet, left out", flush=True)
            continue
        cases = cases or Q.val_cases(config, CASES)
        steps = int(read_checkpoint(ckpt)["diffuseg"]["global_step"])
        found = follow(ckpt, cases)
        spread = found["spread"]
        rows.append([model.label, steps, found["prior"] if found["prior"] is not None else "—", found["start"],
                     *spread])  # fmt: skip
        short = model.label.replace("anchored diffusion (", "anchored (").replace("head 16-32-64-64, ", "")
        series[f"{short}, {steps} steps"] = (list(range(1, len(spread) + 1)), list(spread))
        print(rows[-1], flush=True)
    calls = len(rows[0]) - 4 if rows else 0
    annotators = float(np.nanmean([diversity(masks.bool().numpy()) for _, _, masks in cases])) if cases else None
    headers = ["model", "training steps", "|mu| (trunk)", "|x_hat_0| at t = 1",
               *(f"spread, call {i + 1}" for i in range(calls))]  # fmt: skip
    note = (
        f"\n{CASES} LIDC validation slices (evenly spaced over the validation patients, as the curves take them), "
        f"{MEMBERS} members each, the checkpoint's sampler; each run at the last budget it finished. |mu| and "
        "|x_hat_0| are means over the pixels where the annotators disagree (0: a coin toss, 1: certain); the spread "
        "is the mean 1 - IoU between two members' x_hat_0 > 0 at each network call, the last call giving the masks. "
        f"The annotators' own spread on these slices (mean 1 - IoU between two of them): {fmt(annotators, 2)}.\n"
    )
    figure = line_plot(
        RESULTS / "spread-lidc.png",
        series,
        xlabel="network call of the sampler (1: pure noise)",
        ylabel="members' spread (mean 1 - IoU of x_hat_0 > 0)",
        title="Where the members part (LIDC validation)",
        hline=(annotators, "the annotators' spread") if annotators is not None else None,
    )
    write_markdown(
        RESULTS / "spread-lidc.md",
        "Where the members part (LIDC)",
        info,
        [("Spread per network call", markdown_table(headers, rows, digits=2) + note + f"\n![spread]({figure.name})\n")],
    )


if __name__ == "__main__":
    run_main(main)
