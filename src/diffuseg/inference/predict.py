"""``predict(checkpoint, input, output, overrides)``: ensembles for every case of a dataset, fused, written.

Steps: load the checkpoint (config + EMA network, ``training.checkpoint.load_for_inference``); apply the
``sample.*`` overrides; open INPUT (a dataset folder in any layout ``data.formats`` reads, or image files);
for each case, resize the image to the model size, draw ``sample.samples`` members ``sample.batch_size`` at a
time with per-member seeds, apply relative-area post-processing, fuse (``staple`` | ``mean`` | ``vote``) and
compute the uncertainty map (``inference.ensemble``); write the fused mask, the uncertainty and, with
``save_samples``, every member in the input's own format and geometry (``inference.writers``). The resolved
config is written to ``OUTPUT/config.yaml``. Runs on the first CUDA device when there is one, else the CPU.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from diffuseg.config import Config, config_from_dict, config_to_dict, merge, parse_overrides, save_config
from diffuseg.data.case import Case
from diffuseg.data.formats import open_input
from diffuseg.data.transforms import model_input
from diffuseg.data.verify import is_colour
from diffuseg.errors import DatasetError, UserError
from diffuseg.inference.ensemble import make_draw, prepare_network, resolve_sample_precision, sample_ensembles
from diffuseg.inference.writers import PredictionWriter, check_output

CONFIG_NAME = "config.yaml"


def apply_overrides(config: Config, overrides: Sequence[str]) -> Config:
    """``config`` with dotted ``sample.*`` overrides applied; ``UserError`` for any other key or a bad value."""
    values = parse_overrides(overrides)
    others = sorted(k for k in values if k != "sample")
    if others:
        raise UserError(f"predict takes only sample.* overrides (got {', '.join(others)})")
    try:
        return config_from_dict(merge(config_to_dict(config), values))
    except UserError as err:
        raise UserError(f"overrides: {err}") from None


def _model_inputs(reader, config: Config, pending: deque[Case]) -> Iterator[tuple[str, torch.Tensor]]:
    """Decode cases one by one, keep them in ``pending`` for the writer, yield (case id, model-size image)
    prepared as in training (``transforms.model_input``: resize, then match the channel count)."""
    for index in range(len(reader)):
        case = reader[index]
        try:
            d = config.data
            image = model_input(case.image, d.image_size, d.in_channels, case.case_id, is_colour(case.geometry))
        except ValueError as err:
            raise UserError(f"{case.geometry.sources[0] if case.geometry.sources else case.case_id}: {err}") from None
        pending.append(case)
        yield case.case_id, image


def _as_paths(input: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str | os.PathLike]:
    if isinstance(input, (str, os.PathLike)):
        return [input]
    return list(input)


def predict(
    checkpoint: str | os.PathLike,
    input: str | os.PathLike | Sequence[str | os.PathLike],
    output: str | os.PathLike,
    overrides: Sequence[str] = (),
    save_samples: bool = False,
    layout: str = "auto",
) -> int:
    """Predict every case of ``input`` into ``output``; returns the number of cases written.

    ``input``: a dataset folder or image file(s). ``output`` must not be inside an input folder; input files
    are never overwritten. Raises ``UserError`` for a missing, corrupt or foreign checkpoint, bad overrides,
    unreadable inputs (``DatasetError`` lists every structural problem) or a bad output folder.
    """
    from diffuseg.training.checkpoint import load_for_inference

    inputs = _as_paths(input)
    out = Path(output)
    check_output(out, inputs)  # before any slow work
    for item in inputs:
        if not Path(item).exists():
            raise UserError(f"{item}: input not found")
    config, net, process = load_for_inference(checkpoint)
    config = apply_overrides(config, overrides)
    reader = open_input(inputs, layout, config.data.foreground)
    if reader.problems:
        raise DatasetError(str(inputs[0]), reader.problems)
    if len(reader) == 0:
        raise UserError(f"{inputs[0]}: no images to predict")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    precision = resolve_sample_precision(config.sample.precision, device)  # OUTPUT/config.yaml records what ran
    config = dataclasses.replace(config, sample=dataclasses.replace(config.sample, precision=precision))
    net = prepare_network(net, config.sample, device)
    draw = make_draw(config, net, process)
    pending: deque[Case] = deque()
    written = 0
    with PredictionWriter(out, inputs, save_samples=save_samples) as writer:
        save_config(config, out / CONFIG_NAME)
        bar = tqdm(total=len(reader), unit="img", desc="predict", dynamic_ncols=True)  # shows images/s
        try:
            for result in sample_ensembles(draw, _model_inputs(reader, config, pending), config.sample, device=device):
                case = pending.popleft()
                if case.case_id != result.case_id:  # sample_ensembles yields in input order
                    raise RuntimeError(f"ensemble of {result.case_id} arrived for case {case.case_id}")
                writer.write(case, result.fused, result.uncertainty, result.samples)
                written += 1
                bar.update(1)
        finally:
            bar.close()
    return written
