"""Writing files and folders atomically (temporary name in the same folder, then rename), with the modes the
user's umask gives, and removing the temporaries of writers that were killed.

A temporary is named ``.NAME.PID-XXXXXXXX.tmp`` (plus an optional ending, e.g. ``.tmp.png``): ``PID`` is the
writing process, so ``remove_stale_temps`` deletes only temporaries whose writer no longer runs.
``tempfile.mkstemp``/``mkdtemp`` create 0600/0700; the finished file or folder gets 0666/0777 less the umask
(0644/0755 under umask 022, 0640/0750 under 027), as ``open``/``mkdir`` would have given it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from diffuseg.errors import UserError

_TEMP = re.compile(r"^\..+\.(\d+)-[A-Za-z0-9_]{8}\.tmp(\..+)?$")
_OLD_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp(\..+)?$")  # written before the pid was in the name
OLD_TEMP_AGE_S = 24 * 3600  # a pid-less temporary older than this is a killed writer's


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (``/proc/self/status`` on Linux)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (not thread-safe, but only where /proc is missing)
    os.umask(mask)
    return mask


def temp_prefix(name: str) -> str:
    """The prefix of this process's temporaries for ``name``: ``.NAME.PID-``."""
    return f".{name}.{os.getpid()}-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside ``path`` (``.NAME.PID-XXXXXXXX<suffix>``, same folder, which is created) to
    write; given the umask's mode and renamed over ``path`` (``os.replace``) when the block ends, deleted when
    it raises. Nothing half-written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=suffix)
    except OSError as err:
        raise UserError(f"{path}: cannot write here ({err.strerror or err})") from None
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise UserError(f"{path}: cannot write here ({err.strerror or err})") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def temp_dir(final: Path) -> Path:
    """A new temporary folder beside ``final`` (``.NAME.PID-XXXXXXXX.tmp``) with the umask's folder mode."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=final.parent, prefix=temp_prefix(final.name), suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~current_umask())
    return tmp


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    except OverflowError:
        return False
    return True


def is_stale_temp(path: Path, now: float | None = None) -> bool:
    """Whether ``path`` is a temporary of ``atomic_path``/``temp_dir`` whose writer is gone: its pid is not a
    live process, or (names without a pid, from older versions) it is older than ``OLD_TEMP_AGE_S``."""
    m = _TEMP.match(path.name)
    if m is not None:
        return not _alive(int(m.group(1)))
    if _OLD_TEMP.match(path.name):
        with contextlib.suppress(OSError):
            return (now if now is not None else time.time()) - path.lstat().st_mtime > OLD_TEMP_AGE_S
    return False


def remove_stale_temps(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """Delete the stale temporaries (files and folders) in ``folder`` (and, ``recursive``, its subfolders);
    returns what was removed. A temporary of a live writer (this or another process) is never touched."""
    removed: list[Path] = []
    try:
        children = list(Path(folder).iterdir())
    except OSError:
        return removed
    candidates = [p for p in children if p.name.startswith(".") and ".tmp" in p.name]
    if recursive:
        for sub in children:
            if sub not in candidates and sub.is_dir() and not sub.is_symlink():
                removed += remove_stale_temps(sub, recursive=True)
    now = time.time()
    for p in candidates:
        if not is_stale_temp(p, now):
            continue
        with contextlib.suppress(OSError):
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p)
            else:
                p.unlink()
            removed.append(p)
    return removed
