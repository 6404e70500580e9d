"""The bar of a long loop over files: none below ``QUIET_BELOW`` items, on a terminal from there on (and cleared
at the end), none off a terminal."""

from __future__ import annotations

import io
import re
import sys

from diffuseg.data.progress import QUIET_BELOW, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _shown(n: int, terminal: bool, monkeypatch) -> str:
    err = _Terminal() if terminal else io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert list(progress(list(range(n)), "scan", "file")) == list(range(n))  # every item, in order
    return err.getvalue()


def test_a_bar_only_for_long_loops_on_a_terminal(monkeypatch):
    assert _shown(QUIET_BELOW - 1, terminal=True, monkeypatch=monkeypatch) == ""
    shown = _shown(QUIET_BELOW, terminal=True, monkeypatch=monkeypatch)
    assert re.match(rf"\rscan: +0%\|.*\| 0/{QUIET_BELOW} \[.*file/s\]", shown) and shown.endswith(" \r")  # cleared
    assert _shown(QUIET_BELOW, terminal=False, monkeypatch=monkeypatch) == ""
