"""Files that are either whole or absent: the one atomic write of the project.

    with atomic_open("out/checkpoints/last.ckpt") as f:   # a hidden temporary file beside the target
        torch.save(state, f)                              # on success: flushed, fsynced, renamed over it
    write_json_atomic("out/metrics.json", metrics)

A process killed mid-write leaves the previous file in place (or none), never a truncated one; an
exception inside the block removes the temporary file and propagates. The rename itself is made
durable by an fsync of the folder (where the platform allows it).
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit fsync it and rename it to ``path``."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes whole files: mode 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # e.g. Windows: folders cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    with atomic_open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = None) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; returns the path."""
    return write_text_atomic(path, json.dumps(obj, indent=indent))


def fresh_output_dir(path: str | os.PathLike, overwrite: bool = False) -> tuple[Path, bool]:
    """The folder a command writes into without touching a previous run's outputs: ``path`` itself when it does
    not exist, is empty, or ``overwrite`` is set; otherwise the first free ``path-2``, ``path-3``, ... (as
    ultralytics numbers its runs). Returns ``(folder, moved)``, ``moved`` True when it is not ``path``; creates
    nothing. The caller says where its outputs went (and, with ``overwrite``, removes the stale ones it owns)."""
    path = Path(path)
    if overwrite or not path.exists() or (path.is_dir() and not any(path.iterdir())):
        return path, False
    n = 2
    while True:
        candidate = path.with_name(f"{path.name}-{n}")
        if not candidate.exists() or (candidate.is_dir() and not any(candidate.iterdir())):
            return candidate, True
        n += 1


def check_output_file(path: str | os.PathLike, overwrite: bool = False) -> Path:
    """``path`` if a command may write it: absent, or ``overwrite`` set; else an :class:`OutputExistsError` naming
    it and the flag that allows replacing it."""
    from sagepose.errors import OutputExistsError

    path = Path(path)
    if path.exists() and not overwrite:
        raise OutputExistsError(f"{path} exists; pass --overwrite to replace it, or choose another path")
    return path


def remove_outputs(folder: str | os.PathLike, names) -> list[Path]:
    """Remove ``folder/NAME`` for each of ``names`` that exists there -- a previous run's outputs, before a command
    run with ``--overwrite`` writes its own -- and nothing outside ``folder`` (a link is removed, not followed).
    -> the paths removed."""
    import shutil

    folder = Path(folder)
    removed = []
    for name in names:
        path = folder / name
        if folder.resolve() not in path.parent.resolve().joinpath(path.name).parents:
            continue  # a name like "../x" is not this folder's
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
        else:
            continue
        removed.append(path)
    return removed
