"""Files written safely: atomic writes (a temporary beside the target, renamed over it), temporaries named by
host and process so a later run can remove those of a dead writer, the modes the umask gives, and one error for a
full disk (``disk_full``)."""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from diffuseg.errors import UserError
from diffuseg.runlock import process_alive


def _umask() -> int:
    """The process's umask: from ``/proc/self/status`` on Linux (without changing it, so safe beside other
    threads), elsewhere by setting it and putting it back."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable_mode(path: str | os.PathLike, folder: bool = False) -> None:
    """Give ``path`` the mode a plain ``open`` / ``mkdir`` would: 0666 (folders 0777) less the umask.

    ``tempfile`` makes its files 0600 and folders 0700, which a rename keeps: without this, every atomically
    written file would be unreadable to colleagues and web servers under the usual umask 022."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _host() -> str:
    """This host's name as it stands in temporary names (letters, digits and dashes, at most 32)."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32]


def temp_prefix(name: str) -> str:
    """Prefix of a temporary file or folder beside ``name``: ``.NAME.~HOST~PID~``, so a later run can tell the
    temporaries of a dead writer (``remove_stale_temps``) from those of a live one."""
    return f".{name}.~{_host()}~{os.getpid()}~"


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporaries (``temp_prefix``) in ``folder`` whose writer, a process on this host, is gone
    (killed during a write); returns what was removed. Temporaries of live processes and of other hosts stay."""
    here = _host()
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _TEMP_NAME.match(entry.name)
        if match is None or match["host"] != here or process_alive(int(match["pid"])):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


_TEMP_NAME = re.compile(r"^\..+\.~(?P<host>[A-Za-z0-9-]+)~(?P<pid>\d+)~")


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)  # a full disk, an exhausted quota


def no_space(err: BaseException) -> bool:
    """Whether ``err`` is a write refused for want of space (``NO_SPACE``)."""
    return isinstance(err, OSError) and err.errno in NO_SPACE


def disk_full(path: str | os.PathLike) -> UserError:
    """The one error of a full disk while writing ``path`` through ``atomic_path``: the temporary is gone, so
    nothing is half-written, and what was written before is complete (each file was renamed into place whole)."""
    return UserError(
        f"no space left on device writing {path}; nothing was half-written: the files written so far are "
        "complete, rerun to resume"
    )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary file beside ``path`` (``temp_prefix`` + random + ``suffix``, same folder, which is created)
    to write; renamed over ``path`` (``os.replace``) when the block ends, deleted when it raises. Nothing
    half-written; the file gets the mode the umask gives (``readable_mode``). A full disk or quota, in the
    block or around it, is ``disk_full``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path.name), suffix=suffix)
    except OSError as err:
        raise disk_full(path) if no_space(err) else _cannot_write(path, err) from None
    os.close(fd)
    try:
        yield Path(tmp)
        try:
            readable_mode(tmp)
            os.replace(tmp, path)
        except OSError as err:
            raise disk_full(path) if no_space(err) else _cannot_write(path, err) from None
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        if no_space(err):
            raise disk_full(path) from None
        raise


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[Path]:
    """``atomic_path`` for a folder (a DICOM series): a temporary folder beside ``path`` to fill, put at ``path``
    when the block ends and deleted when it raises. A folder already at ``path`` is first renamed aside (to a
    temporary name) and deleted after, so ``path`` holds the old folder or the new one whole, never a mixture."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path.name)))
    except OSError as err:
        raise disk_full(path) if no_space(err) else _cannot_write(path, err) from None
    try:
        yield tmp
        try:
            readable_mode(tmp, folder=True)
            old = None
            if path.is_dir() and not path.is_symlink():
                old = Path(tempfile.mkdtemp(dir=path.parent, prefix=temp_prefix(path.name)))
                os.replace(path, old / path.name)
            try:
                os.replace(tmp, path)
            except OSError:
                if old is not None:  # the old folder goes back
                    os.replace(old / path.name, path)
                raise
        except OSError as err:
            raise disk_full(path) if no_space(err) else _cannot_write(path, err) from None
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException as err:
        shutil.rmtree(tmp, ignore_errors=True)
        if no_space(err):
            raise disk_full(path) from None
        raise


def remove_output(path: str | os.PathLike) -> None:
    """Delete a written file, or a written folder of files only (a DICOM series) with what it holds; nothing when
    it is gone or is a folder holding folders (never a written one)."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        if all(p.is_file() and not p.is_symlink() for p in path.iterdir()):
            shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _cannot_write(path: Path, err: OSError) -> UserError:
    return UserError(f"{path}: cannot write here ({err.strerror or err})")


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through ``atomic_path``."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
