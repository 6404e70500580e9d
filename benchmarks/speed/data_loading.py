"""Time loading a dataset through ``build_datasets``: cold (decode + write the cache) and cached.

    .venv/bin/python benchmarks/speed/data_loading.py ../shared/data/lidc --size 128 --workers 2

Prints seconds for: the cold build, the cached build, and one pass over every training item
(cached arrays + augmentation + annotator draw), on the machine's cores as they are.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from diffuseg.config import DataConfig
from diffuseg.data.dataset import build_datasets


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("root")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--augment", action="store_true")
    a = p.parse_args()
    cache = tempfile.mkdtemp(prefix="diffuseg-cache-")
    cfg = DataConfig(root=a.root, image_size=a.size, augment=a.augment)
    try:
        t = time.perf_counter()
        train, val = build_datasets(cfg, cache_dir=cache, workers=a.workers)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        train, val = build_datasets(cfg, cache_dir=cache, workers=a.workers)
        warm = time.perf_counter() - t
        t = time.perf_counter()
        for i in range(len(train)):
            train[i]
        epoch = time.perf_counter() - t
        n = len(train) + len(val)
        print(f"{n} items ({len(train)} train, {len(val)} val) at {a.size} px, workers={a.workers}")
        print(f"cold build (scan, decode, resize, verify, write cache): {cold:.1f} s ({n / cold:.0f} items/s)")
        print(f"cached build (scan, hash, memory-map): {warm:.1f} s")
        print(
            f"one pass over the training items from the cache (augment={a.augment}): {epoch:.1f} s "
            f"({len(train) / epoch:.0f} items/s)"
        )
    finally:
        shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
    main()
