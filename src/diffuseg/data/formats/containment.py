"""Which files of a dataset may be opened: regular files (``files.check_regular``), and for images and labels
files inside the dataset folder, a link followed only when it moves a whole case (a linked patient folder)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from diffuseg.data.formats.files import check_regular
from diffuseg.data.progress import progress
from diffuseg.errors import UserError


class Containment:
    """The dataset folder ``root``; resolves each folder once (a dataset's files share a few folders)."""

    def __init__(self, root: Path):
        self.root = root
        self._folders: dict[Path, Path] = {}

    def outside(self, path: Path, partner: Path | None) -> Path | None:
        """Where the file ``path`` leads when a link takes it out of the dataset folder, else ``None``. A link
        that moves a case's image and labels together (a linked patient folder, above the folders of both
        ``path`` and its ``partner``, the case's image or label file) is followed: the file must then lie in
        that folder's target."""
        target = path.resolve() if path.is_symlink() else self._resolved(path.parent) / path.name
        inside = [self._resolved(self.root)]
        if partner is not None:
            with contextlib.suppress(ValueError):  # one relative, one absolute
                inside.append(self._resolved(Path(os.path.commonpath([path.parent, partner.parent]))))
        return None if any(target == f or f in target.parents for f in inside) else target

    def outside_problem(self, path: Path, partner: Path | None, what: str) -> str | None:
        """``outside``'s problem line for a file of kind ``what`` (``images``, ``labels``), or ``None``."""
        outside = self.outside(path, partner)
        if outside is None:
            return None
        return (
            f"{path}: a link to {outside}, outside the dataset folder {self.root}; {what} are never read from "
            "outside the dataset (copy the file in, or link the folder of the whole case)"
        )

    def _resolved(self, folder: Path) -> Path:
        if folder not in self._folders:
            self._folders[folder] = folder.resolve()
        return self._folders[folder]


def drop_unreadable(entries: Sequence[Any], where: Containment | None) -> tuple[list[Any], list[str]]:
    """(the entries kept, the problems) of ``base.Entry`` items, each entry that has a file that is no regular file
    (``check_regular``: a dangling link, a pipe, a device, a folder named like an image), or, with ``where`` (a
    contained dataset), an image linked from outside the dataset folder, left out (each file named once), so that
    nothing later opens, stats or hashes it. Label files are checked so as they are decoded."""
    found: dict[tuple[Path, Path | None, bool], str | None] = {}
    kept, problems = [], []
    for e in progress(entries, "check files", "item"):
        partner = e.masks[0][0] if e.masks and e.masks[0] else None
        bad = False
        for path in (*e.images, *(p for files in e.masks for p in files)):
            key = (path, partner, path in e.images)
            if key not in found:
                found[key] = _file_problem(*key, where)
                if found[key] is not None:
                    problems.append(str(found[key]))
            bad = bad or found[key] is not None
        if not bad:
            kept.append(e)
    return kept, problems


def _file_problem(path: Path, partner: Path | None, image: bool, where: Containment | None) -> str | None:
    try:
        check_regular(path)
    except UserError as err:
        return str(err)
    return where.outside_problem(path, partner, "images") if where is not None and image else None
