"""The report's tables fit a page 1,400 px wide for 3 and 14 classes: by the column and text-length rules on the
HTML, and, where Chromium is installed, measured in the browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from pngs import png

from diffuseg.evaluation.evaluate import evaluate
from diffuseg.evaluation.report import write_report
from diffuseg.evaluation.tables import HEADER_CHARS, MAX_COLUMNS, PAGE_WIDTH

# BTCV's 13 abdominal organs and one more: long names, as users name them
ORGANS = ("spleen", "right_kidney", "left_kidney", "gallbladder", "esophagus", "liver", "stomach", "aorta",
          "inferior_vena_cava", "portal_vein_and_splenic_vein", "pancreas", "right_adrenal_gland",
          "left_adrenal_gland", "duodenum")  # fmt: skip
CONTENT = PAGE_WIDTH - 2 * 24  # the body's padding
CHAR_PX = 8.5  # a generous average glyph width at 15 px
CELL_PAD = 20


def stripes(classes: int, shift: int, size: int = 32) -> np.ndarray:
    """Class k (1..classes) in a vertical stripe; ``shift`` moves every stripe right."""
    out = np.zeros((size, size), np.uint8)
    width = max(1, (size - 4) // classes)
    for k in range(classes):
        c0 = 2 + k * width + shift
        out[4:28, max(0, c0) : max(0, c0 + width - 1)] = k + 1
    return out


@pytest.fixture(scope="module", params=[3, 14])
def report_page(request, tmp_path_factory) -> Path:
    classes = request.param
    root = tmp_path_factory.mktemp(f"classes{classes}")
    gt, pred = root / "gt", root / "pred"
    rng = np.random.default_rng(classes)
    for n in range(2):
        png(gt / "images" / f"patient{n:03d}_frame01_slice_10.png", rng.integers(0, 255, (32, 32)))
        png(gt / "masks" / f"patient{n:03d}_frame01_slice_10.png", stripes(classes, 0))
        png(pred / f"patient{n:03d}_frame01_slice_10.png", stripes(classes, n))
        for k in range(4):
            png(
                pred / "samples" / f"patient{n:03d}_frame01_slice_10_s{k}.png",
                stripes(classes, int(rng.integers(-1, 2))),
            )
    names = ORGANS[:classes] if classes > 3 else ("RV", "Myo", "LV")
    evaluate(pred, gt, quiet=True, classes=",".join(f"{name}={k + 1}" for k, name in enumerate(names)))
    return write_report(pred, max_cases=1)


class Tables(HTMLParser):
    """Every table: rows of cells ``(text, class attribute)``."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[list[list[tuple[str, str]]]] = []
        self.cell: list[str] | None = None
        self.kind = ""

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell, self.kind = [], dict(attrs).get("class") or tag

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self.cell is not None:
            self.tables[-1][-1].append(("".join(self.cell).strip(), self.kind))
            self.cell = None


def estimated_width(rows: list[list[tuple[str, str]]]) -> float:
    """Each column as wide as its longest cell that cannot wrap (numbers, names) or its header's longest word
    (headers wrap at spaces); free text ('help') wraps and counts 200 px."""
    widths: dict[int, float] = {}
    for row in rows:
        for k, (text, kind) in enumerate(row):
            longest = max(map(len, text.split()), default=0) if kind == "th" else len(text)
            px = 200 if kind == "help" else longest * CHAR_PX
            widths[k] = max(widths.get(k, 0), px + CELL_PAD)
    return sum(widths.values())


def test_no_table_wider_than_the_page_by_rule(report_page):
    parser = Tables()
    parser.feed(report_page.read_text())
    assert len(parser.tables) >= 5
    for rows in parser.tables:
        assert max(len(r) for r in rows) <= MAX_COLUMNS
        assert estimated_width(rows) <= CONTENT, rows[0]
    headers = [t for rows in parser.tables for t, kind in rows[0] if kind == "th"]
    assert all(len(h) <= max(HEADER_CHARS, 30) for h in headers)


def test_class_table_is_one_row_per_class_with_short_cells(report_page):
    text = report_page.read_text()
    table = text[text.index("Per class over cases") :]
    table = table[: table.index("</table>")]
    cells = re.findall(r"<td class='num'[^>]*>(.*?)</td>", table)
    plain = [re.sub("<[^>]+>", "", c).replace("&plusmn;", "±") for c in cells]
    assert plain and max(len(c) for c in plain) <= len("0.000 ± 0.000 (n=999)")


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (apt-get install chromium)")
def test_no_table_wider_than_the_page_in_chromium(report_page, tmp_path):
    """Chromium lays the page out at 1,400 px (every details element opened): every table's right edge stays
    inside the page's content box."""
    probe = """<script>
document.querySelectorAll('details').forEach(d => d.open = true);
const b = document.body;
document.title = JSON.stringify({
  w: document.documentElement.clientWidth,
  right: b.getBoundingClientRect().right - parseFloat(getComputedStyle(b).paddingRight),
  tables: [...document.querySelectorAll('table')].map(t => Math.ceil(t.getBoundingClientRect().right))});
</script></body>"""
    page = report_page.parent / "probe.html"
    page.write_text(report_page.read_text().replace("</body>", probe))
    done = subprocess.run(
        ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={PAGE_WIDTH},900", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    found = re.search(r"<title>(.*?)</title>", done.stdout)
    assert found, done.stderr[-2000:]
    measured = json.loads(found.group(1).replace("&quot;", '"'))
    assert measured["w"] == PAGE_WIDTH
    assert len(measured["tables"]) >= 5 and max(measured["tables"]) <= measured["right"], measured
