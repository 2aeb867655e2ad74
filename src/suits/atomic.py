"""Atomic file writes: write to a hidden temporary beside the target, then ``os.replace``.

The one place of the project's atomic writes: :func:`atomic_path` for any writer that takes a
path, :func:`write_text` for text.

Standard library only (the workflow's Snakefile imports writers that use it, without torch).
A killed writer never leaves a complete-looking file; the next write of the same file removes
the temporary a SIGKILLed writer could not.
"""
from __future__ import annotations

import contextlib
import glob
import os
import socket
import uuid
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "write_text"]

PathLike = str | os.PathLike


def _suffix(path: Path) -> str:
    name = path.name
    for s in (".nii.gz", ".nii", ".pt", ".pth"):
        if name.endswith(s):
            return s
    return "".join(path.suffixes) or ".tmp"


_HOST = "".join(c if c.isalnum() or c in "-_" else "_" for c in socket.gethostname()) or "host"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return True


def _remove_stale(path: Path, suffix: str) -> None:
    """Remove temporaries of ``path`` left by killed writers: same host, writer no longer runs.
    (A writer on another host of a shared file system may still be alive: left alone.)"""
    prefix = f".{path.name}.{_HOST}."
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp{suffix}"):
        pid = tmp.name[len(prefix):].split(".")[0]
        if pid.isdigit() and not _pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (hidden, same suffix); on normal exit it replaces
    ``path`` atomically, on an exception it is removed and ``path`` is left untouched.

    The name ``.{name}.{host}.{pid}.{random}.tmp{suffix}`` lets a later write of the same path
    remove what a SIGKILLed writer could not: temporaries of ``path`` from this host whose
    process is gone."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = _suffix(path)
    _remove_stale(path, suffix)
    tmp = path.parent / f".{path.name}.{_HOST}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{suffix}"
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def write_text(path: PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` with ``\\n`` line ends to ``path`` atomically (:func:`atomic_path`)."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    return path
