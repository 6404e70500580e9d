#!/usr/bin/env python
"""Open an evaluation report in headless Chromium and save a screenshot (a manual check, not a CI test).

    python scripts/screenshot_report.py PRED/report/index.html --out report.png
    python scripts/screenshot_report.py PRED/results.json          # writes the report first

Needs the Debian package ``chromium`` (``apt-get update && apt-get install -y chromium``); CI has none.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--hide-scrollbars",
    "--allow-file-access-from-files",
)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("source", help="report .html, or a results.json / folder to write the report from")
    p.add_argument("--out", default="report-screenshot.png", help="PNG to write")
    p.add_argument("--width", type=int, default=1400)
    p.add_argument("--height", type=int, default=4000, help="page height captured (px)")
    p.add_argument("--browser", default=None, help="browser executable (default: chromium on PATH)")
    p.add_argument(
        "--colors", type=int, default=0, help="quantise the PNG to this many colours to keep it small (0: off)"
    )
    args = p.parse_args(argv)

    page = Path(args.source)
    if page.suffix.lower() not in (".html", ".htm"):
        from diffuseg.evaluation.report import write_report

        page = write_report(page)
    browser = args.browser or shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        print("error: chromium not found (apt-get install -y chromium)", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    cmd = [
        browser,
        *FLAGS,
        f"--window-size={args.width},{args.height}",
        f"--screenshot={out}",
        page.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if done.returncode != 0 or not out.is_file():
        print(f"error: chromium failed ({done.returncode}):\n{done.stderr[-2000:]}", file=sys.stderr)
        return 2
    if args.colors:
        from PIL import Image

        with Image.open(out) as shot:
            small = shot.convert("RGB").quantize(colors=args.colors, method=Image.Quantize.MEDIANCUT)
        small.save(out, optimize=True)
    print(f"screenshot: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
