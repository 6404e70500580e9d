"""The cases ``predict`` and ``evaluate`` take: ``--split train|val`` (the run's ``split.json``), ``--split test``
(the dataset's own test cases) or ``--cases FILE`` (a list of case names); every case without any of them."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from diffuseg.data import splits
from diffuseg.errors import UserError


def choose_cases(
    split: str | None,
    run: str | os.PathLike | None,
    listed: str | os.PathLike | None,
    checkpoints: Sequence[Path],
    inputs: list[str],
    labels: bool = False,
) -> tuple[list[str], set[str] | None, str | None]:
    """(the inputs to read, the case ids to keep or ``None`` for all, a line saying which or ``None``).

    Args:
        split: ``--split``: ``train``/``val`` read the run's split.json (from ``run``, else the first checkpoint's
            run folder; several checkpoints: their runs must hold the same split unless ``run`` chooses one);
            ``test`` reads the dataset's own (``splits.test_split``: the one input folder is replaced by it).
        run: ``--run``, the run folder.
        listed: ``--cases FILE`` (``splits.read_case_list``).
        checkpoints: the checkpoint files predicted with (an ensemble's in member order).
        inputs: the input paths.
        labels: the inputs are ground truth (``--split test`` reads nnU-Net's ``labelsTs/``).
    """
    if split is None:
        if run:
            raise UserError("--run is used with --split train|val")
        if listed is None:
            return inputs, None, None
        cases = splits.read_case_list(listed)
        return inputs, cases, f"--cases: {len(cases)} case(s) of {listed}"
    if listed is not None:
        raise UserError(f"--split {split} and --cases both choose the cases; give one")
    if split == "test":
        if run or len(inputs) != 1:
            raise UserError("--split test takes one dataset folder and no --run (the test cases are the dataset's own)")
        folder, cases, line = splits.test_split(inputs[0], labels)
        return [str(folder)], cases, line
    files = list(checkpoints) or [None]
    cases = splits.split_cases(split, run=run, checkpoint=files[0])
    for other in files[1:] if not run else []:
        if splits.split_cases(split, checkpoint=other) != cases:
            raise UserError(
                f"{files[0]}, {other}: the runs hold different {split} splits (split.json); --split {split} "
                "would predict cases one of them trained on; give --run RUN to choose the split"
            )
    return inputs, cases, f"--split {split}: {len(cases)} case(s) of the run's split.json"
