"""Atomic file writes: a reader (a user, a worker, TF Serving) sees the old file or the new one,
never half of one, and a killed writer leaves no stray temporary file behind under a name that a
later write would not clean up.

Temporary files are named ``.tmp-<pid>-<name>`` beside their target; :func:`remove_stale_temporaries`
removes those whose writer is gone. Pure Python, no TensorFlow.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

TEMP_PREFIX = ".tmp-"


def fsync_dir(path: str) -> None:
    """Flushes a directory entry (a rename) to disk where the platform allows it."""
    with contextlib.suppress(OSError):
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def fsync_tree(path: str) -> None:
    """Flushes every file and directory below ``path``."""
    for root, _, names in os.walk(path):
        for filename in names:
            with open(os.path.join(root, filename), "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(root)


@contextlib.contextmanager
def atomic_path(path: str):
    """Yields a temporary path beside ``path``; renames it onto ``path`` if the block succeeds.

    The block writes the temporary path by any means (``model.save``, ``open``, a library);
    on an exception the temporary file is removed and ``path`` is untouched.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    base = os.path.basename(path)
    # keep the extension: Keras picks the format of model.save from it
    temporary = os.path.join(directory, f"{TEMP_PREFIX}{os.getpid()}-{base}")
    try:
        yield temporary
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
        fsync_dir(directory)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.remove(temporary)


def write_text(path: str, text: str) -> str:
    """Writes ``text`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as temporary, open(temporary, "w", encoding="utf-8") as stream:
        stream.write(text)
    return path


def make_temp_dir(parent: str, prefix: str) -> str:
    """A new directory ``parent/.tmp-<pid>-<prefix>…`` for staging a tree before a rename."""
    os.makedirs(parent, exist_ok=True)
    return tempfile.mkdtemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-{prefix}", dir=parent)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(directory: str) -> list[str]:
    """Removes ``.tmp-<pid>-*`` entries in ``directory`` whose writing process has exited.

    Returns the removed paths. Entries of live processes (a concurrent writer) are kept.
    """
    import shutil

    removed = []
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.startswith(TEMP_PREFIX):
            continue
        pid_text = entry[len(TEMP_PREFIX):].split("-", 1)[0]
        if pid_text.isdigit() and _pid_alive(int(pid_text)) and int(pid_text) != os.getpid():
            continue
        if pid_text.isdigit() and int(pid_text) == os.getpid():
            continue
        full = os.path.join(directory, entry)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.remove(full)
        removed.append(full)
    return removed
