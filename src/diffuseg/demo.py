"""``diffuseg demo``: train, predict, evaluate and report on the bundled LIDC subset, in minutes on a CPU.

Steps (each one the library function the CLI subcommand calls):
1. train the ``demo`` preset on the training patients (``training.run.train``); a finished run in the same
   folder is reused, an interrupted one resumed;
2. copy the held-out slices (validation patients, at most ``HELD_OUT`` of them) into ``OUT/held-out`` in
   the dataset's own layout, so prediction and evaluation read them like any dataset;
3. predict an ensemble per slice, fused with STAPLE, with every sample saved (``inference.predict``);
4. score the ensembles against the annotators (``evaluation.evaluate``) and write the HTML report with
   figures (``evaluation.report.write_report``).

``data`` runs the same on a full dataset folder (any layout; patient lists ``train_patients.txt`` and
``val_patients.txt`` in its root or its parent are used when present, else a seeded split by patient; see
``data.splits``).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from diffuseg.config import Config
from diffuseg.errors import UserError
from diffuseg.presets import load_config
from diffuseg.runtime import use_threads

DEMO_DATA = Path(__file__).resolve().parent / "demo_data" / "lidc"
HELD_OUT = 24  # held-out slices predicted and scored


def demo_config(out_dir: Path, data: Path, steps: int | None, extra: Sequence[str] = ()) -> Config:
    """The ``demo`` preset pointed at ``data`` and ``out_dir/run``; patient lists from the data root if any;
    ``extra``: further dotted overrides (e.g. ``train.seed=1``)."""
    overrides = [f"data.root={data}", f"train.out_dir={out_dir / 'run'}", f"data.cache_dir={out_dir / 'cache'}"]
    if (data / "train_patients.txt").is_file() and (data / "val_patients.txt").is_file():
        overrides += [
            f"data.train_patients={data / 'train_patients.txt'}",
            f"data.val_patients={data / 'val_patients.txt'}",
        ]
    if steps is not None:
        overrides.append(f"train.steps={steps}")
    return load_config("demo", [*overrides, *extra])


def held_out_copy(config: Config, dest: Path, limit: int | None = None) -> int:
    """Copy up to ``limit`` (default ``HELD_OUT``) validation items to ``dest``, each file at its path relative
    to the data root.

    Top-level files of the root (e.g. ``dataset.json``) are copied too, so the copy opens in the same layout.
    Returns the number of items copied.
    """
    from diffuseg.data.formats import open_dataset
    from diffuseg.data.splits import plan_split

    d = config.data
    root = Path(d.root)
    reader = open_dataset(root, d.layout, d.foreground)
    val = plan_split(reader, d).val
    val = [i for i in val if reader.entries[i].masks]
    if not val:
        raise UserError(f"{root}: no held-out (validation) patients to predict")
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for item in root.iterdir():
        if item.is_file():
            shutil.copy2(item, dest / item.name)
    limit = limit or HELD_OUT
    chosen = val[:: max(1, len(val) // limit)][:limit]  # spread over the held-out patients
    for index in chosen:
        entry = reader.entries[index]
        for path in (*entry.images, *(p for files in entry.masks for p in files)):
            target = dest / Path(path).resolve().relative_to(root.resolve())
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists():
                shutil.copy2(path, target)
    return len(chosen)


def run_demo(
    out_dir: str | os.PathLike = "demo-output",
    data: str | os.PathLike | None = None,
    steps: int | None = None,
    threads: int | None = None,
) -> Path:
    """Train, predict, evaluate and report; returns the report's ``index.html``. ``threads``: CPU threads
    (``runtime.use_threads``; torch's setting is restored afterwards)."""
    out = Path(out_dir)
    root = Path(data) if data is not None else DEMO_DATA
    if not root.is_dir():
        raise UserError(f"{root}: dataset folder not found")
    if out.resolve().is_relative_to(root.resolve()):
        raise UserError(f"{out}: the output folder must not be inside the dataset folder {root}")
    config = demo_config(out, root, steps)
    before = torch.get_num_threads()
    use_threads(threads)  # --threads, else OMP_NUM_THREADS, else one per idle core (diffuseg.runtime)
    try:
        return _stages(config, out, root)
    finally:
        torch.set_num_threads(before)


def _stages(config: Config, out: Path, root: Path) -> Path:
    """The four stages of the demo, timed; returns the report page."""
    from diffuseg.checkpoint import LAST
    from diffuseg.evaluation.evaluate import evaluate
    from diffuseg.evaluation.report import write_report
    from diffuseg.inference.predict import predict
    from diffuseg.training.run import train

    ckpt = Path(config.train.out_dir) / "checkpoints" / LAST
    started = time.perf_counter()
    print(f"[1/4] training on {root} (run folder {config.train.out_dir})")
    train(config, resume=ckpt.exists())
    trained = time.perf_counter()

    held_out = out / "held-out"
    count = held_out_copy(config, held_out)
    predictions = out / "predictions"
    print(f"[2/4] predicting {config.sample.samples}-sample ensembles for {count} held-out slices")
    predict(ckpt, held_out, predictions, save_samples=True, overwrite=True)  # the demo owns its folder
    predicted = time.perf_counter()

    print("[3/4] evaluating against every annotator")
    results = out / "results.json"
    evaluate(predictions, held_out, out=results)
    print("[4/4] writing the report")
    page = write_report(results, out=out / "report")
    done = time.perf_counter()
    print(
        f"demo finished in {done - started:.0f} s (training {trained - started:.0f} s, "
        f"prediction {predicted - trained:.0f} s, evaluation and report {done - predicted:.0f} s)"
    )
    return page
