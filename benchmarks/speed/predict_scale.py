"""Prediction at scale: ``diffuseg predict`` throughput (cases/s) with 1, 2, ... processes (``--devices N``).

Builds a small randomly initialised ``diffusion-unet`` checkpoint at 64 px (speed does not depend on the
weights), copies the first ``--images`` DDTI images (the ``cropped/`` folder) into an input folder, then times
the whole user command ``python -m diffuseg.cli predict CKPT IMAGES OUT --devices N`` for each N of
``--devices`` (best of ``--repeats``, a fresh OUTPUT each time, every process with one torch thread), and
checks that every run's predictions are byte-identical to the 1-process run's. On a machine with N GPUs the
same command runs one process per GPU. Writes ``results/predict-scale.md`` (``--quick``: ``-quick.md``).

    .venv/bin/python benchmarks/speed/predict_scale.py                    # 24 images, --devices 1,2
    .venv/bin/python benchmarks/speed/predict_scale.py --devices 1,2,4,8  # on a GPU machine
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # this folder's modules
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # common.py
from common import RESULTS, load_average, machine, markdown_table, print_machine, write_markdown

REPO = Path(__file__).resolve().parents[2]
DATA = REPO.parent / "shared" / "data" / "ddti"
MODEL = [
    "data.image_size=64",
    "model.options={channels: [16, 32, 32], num_res_blocks: [1, 1, 1], middle_blocks: 1, time_dim: 32}",
]


def make_checkpoint(path: Path, steps: int, samples: int) -> None:
    from diffuseg.checkpoint import metadata, save_atomic
    from diffuseg.presets import load_config
    from diffuseg.training.module import DiffusionModule

    sample = [f"sample.steps={steps}", f"sample.samples={samples}", f"sample.batch_size={samples}"]
    config = load_config("lidc-central", [*MODEL, "sample.sampler=ddpm", *sample])
    torch.manual_seed(0)
    save_atomic({"state_dict": DiffusionModule(config).state_dict(), "diffuseg": metadata(config, 0, 0)}, path)


def copy_images(data: Path, count: int, dest: Path) -> int:
    files = sorted((data / "cropped").glob("*.png"))[:count]
    if not files:
        raise SystemExit(f"{data}/cropped: no DDTI images (pass --data)")
    dest.mkdir(parents=True)
    for f in files:
        shutil.copy(f, dest / f.name)
    return len(files)


def run_predict(ckpt: Path, images: Path, out: Path, devices: int) -> float:
    """Seconds of one ``diffuseg predict`` command, start to exit (imports and process start included)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "diffuseg.cli", "predict", str(ckpt), str(images), str(out), "--devices", str(devices)]
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return seconds


def predictions(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.startswith("manifest")
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", default="1,2", help="process counts to time, e.g. 1,2")
    p.add_argument("--images", type=int, default=24)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--data", type=Path, default=DATA)
    p.add_argument("--quick", action="store_true", help="4 images, 2 steps, 1 repeat (a smoke check)")
    a = p.parse_args()
    if a.quick:
        a.images, a.steps, a.repeats = 4, 2, 1
    counts = [int(x) for x in a.devices.split(",")]
    info = machine()
    info["torch threads"] = "1 per process (OMP_NUM_THREADS=1)"
    info["accelerator"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none (CPU processes)"
    print_machine(info)
    rows, sizes = [], []
    with tempfile.TemporaryDirectory(prefix="predict-scale-") as tmp:
        root = Path(tmp)
        make_checkpoint(root / "model.ckpt", a.steps, a.samples)
        n = copy_images(a.data, a.images, root / "images")
        first: dict[str, bytes] | None = None
        base = None
        for devices in counts:
            times = []
            for r in range(a.repeats):
                out = root / f"out-{devices}-{r}"
                times.append(run_predict(root / "model.ckpt", root / "images", out, devices))
                files = predictions(out)
                first = first if first is not None else files
                same = files == first
                shutil.rmtree(out)
            best = min(times)
            base = base or best
            rows.append([devices, n, best, max(times), n / best, base / best, same])
            sizes.append(load_average())
            print(f"--devices {devices}: best {best:.2f} s, {n / best:.2f} cases/s, identical: {same}", flush=True)
    setup = (
        f"`diffusion-unet` with channels (16, 32, 32), random weights, 64 x 64 px; {a.samples}-member DDPM ensembles "
        f"with {a.steps} steps, STAPLE; {n} DDTI images (`cropped/`, first {n} by name), resized to 64 px and "
        "written back at 300 x 300. Time = the whole `python -m diffuseg.cli predict ... --devices N` command "
        f"(Python and torch start-up, checkpoint load, process group set-up included), best of {a.repeats}, "
        "each into a fresh folder."
    )
    table = markdown_table(
        ["--devices", "cases", "best s", "worst s", "cases/s", "speed-up", "byte-identical to 1 process"], rows
    )
    table += "\nLoad average (1/5/15 min) after each row: " + "; ".join(sizes) + "\n"
    table += (
        f"\nReading: {os.cpu_count()} logical cores; a load average above that means the processes shared the cores "
        "with other jobs, and the speed-up is then not the scaling on a quiet machine. The time includes each "
        "process's start-up, which a few cases do not amortise.\n"
    )
    name = "predict-scale-quick.md" if a.quick else "predict-scale.md"
    write_markdown(
        RESULTS / name, "diffuseg predict: throughput by process count", info, [("setup", setup), ("results", table)]
    )


if __name__ == "__main__":
    main()
