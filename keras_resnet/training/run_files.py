"""The files of a run directory (``runs/<name>/``) and what an earlier, killed run left there.

Keras' ``BackupAndRestore`` writes its weights (``latest.weights.h5``) and then its
``training_metadata.json`` in place, so a kill during either write leaves a broken file. Runs
back up with ``double_checkpoint=True`` (Keras keeps the previous pair as ``*.bkp``), and
:meth:`RunFiles.prepare` checks the backup before a resume: a broken pair is replaced by the
previous one, or removed (the run starts again, with a warning) when there is none.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile

from keras_resnet import files

logger = logging.getLogger(__name__)

BACKUP_WEIGHTS = "latest.weights.h5"
BACKUP_METADATA = "training_metadata.json"
PREVIOUS_SUFFIX = ".bkp"  # Keras' name for the previous pair (double_checkpoint)


@dataclasses.dataclass(frozen=True)
class RunFiles:
    """The files of a run directory, and what an earlier, killed run left there."""

    run_dir: str

    def path(self, key):
        return os.path.join(self.run_dir, {
            "model": "model.keras", "best": "best.keras", "history": "history.csv",
            "curves": "curves.png", "metrics": "metrics.json", "logs": "logs",
            "backup": "backup"}[key])

    @property
    def backup_metadata(self):
        return os.path.join(self.path("backup"), BACKUP_METADATA)

    def resume_marker(self):
        """A file that shows an earlier run of this directory was killed, or None."""
        for path in (self.backup_metadata, *self.phase_markers()):
            if os.path.exists(path):
                return path
        return None

    def phase_markers(self):
        """Fine-tuning's per-phase backups and the finished head (see ``training.fine_tuning``)."""
        return (os.path.join(self.path("backup"), "head", BACKUP_METADATA),
                os.path.join(self.path("backup"), "fine_tune", BACKUP_METADATA),
                os.path.join(self.run_dir, "head.weights.h5"))

    def backed_up_step_note(self):
        """For a backup written mid-epoch (``backup_every_steps``): which step it holds."""
        try:
            with open(self.backup_metadata) as file:
                batch = int(json.load(file).get("batch", 0))
        except (OSError, ValueError, AttributeError):
            return ""
        if batch < 0:  # an epoch-end backup (keras_resnet.data.position.PositionBackup)
            return ""
        # where the data goes on is logged by keras_resnet.data.position.fit
        return f" (weights and optimizer as backed up after its step {batch + 1})"

    def prepare(self):
        """Creates the run directory; returns the epoch a killed run resumes from, or None.

        A backup broken by a kill during Keras' in-place writes (unreadable metadata or
        weights) is replaced by the previous backup when that one is whole, else removed, so
        that the run starts again from scratch; either way a warning is logged.
        """
        os.makedirs(self.run_dir, exist_ok=True)
        files.remove_stale_temporaries(self.run_dir)
        for directory in (self.path("backup"), *(os.path.dirname(marker)
                                                for marker in self.phase_markers()[:2])):
            repair_backup(directory)
        if self.resume_marker() is None:
            # A fresh run: no stale history or checkpoints from an earlier one.
            for key in ("model", "best", "history", "metrics"):
                if os.path.exists(self.path(key)):
                    os.remove(self.path(key))
            return None
        if not os.path.exists(self.backup_metadata):
            return 0  # a fine-tuning run; it finds its phase itself
        return read_backup_epoch(self.backup_metadata)


    def discard_untrained(self):
        """After a failure before anything was trained (no backup, no epoch in
        ``history.csv``): removes the empty history, the TensorBoard logs and, when nothing
        else is left, the run directory, so that a failed start leaves no half run behind."""
        if self.resume_marker() is not None or _has_rows(self.path("history")):
            return
        if os.path.exists(self.path("history")):
            os.remove(self.path("history"))
        shutil.rmtree(self.path("logs"), ignore_errors=True)
        shutil.rmtree(self.path("backup"), ignore_errors=True)
        try:
            os.rmdir(self.run_dir)
        except OSError:  # it holds other files (or is gone): leave it
            pass


def _has_rows(path):
    try:
        with open(path, encoding="utf-8") as stream:
            return sum(1 for line in stream if line.strip()) > 1
    except OSError:
        return False


def read_backup_epoch(path: str) -> int:
    """The epoch in a ``BackupAndRestore`` metadata file.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not Keras' ``{"epoch": int, "batch": int}`` (e.g. cut short).
    """
    with open(path, encoding="utf-8") as file:
        text = file.read()
    metadata = json.loads(text)  # JSONDecodeError is a ValueError
    if (not isinstance(metadata, dict) or type(metadata.get("epoch")) is not int
            or metadata["epoch"] < 0 or type(metadata.get("batch", 0)) is not int):
        raise ValueError(f"{path} must hold {{'epoch': int >= 0, 'batch': int}}; got {text!r}")
    return metadata["epoch"]


def _weights_problem(path: str) -> str | None:
    """Why a backed-up weights file cannot be loaded (every array is read), or None."""
    import h5py

    def read(_, item):
        if isinstance(item, h5py.Dataset):
            item[()]

    try:
        with h5py.File(path, "r") as handle:
            handle.visititems(read)
    except Exception as error:  # h5py raises OSError, KeyError, RuntimeError... for a cut file
        return f"{type(error).__name__}: {error}"
    return None


def _pair_problem(directory: str, suffix: str = "") -> str | None:
    """Why the backup pair (``suffix`` "" current, ".bkp" previous) is unusable, or None."""
    metadata = os.path.join(directory, BACKUP_METADATA + suffix)
    weights = os.path.join(directory, BACKUP_WEIGHTS + suffix)
    try:
        read_backup_epoch(metadata)
    except (OSError, ValueError) as error:
        return f"{metadata}: {error}"
    if not os.path.exists(weights):
        return f"{weights} is missing"
    problem = _weights_problem(weights)
    return None if problem is None else f"{weights}: {problem}"


def repair_backup(directory: str) -> str:
    """Makes a ``BackupAndRestore`` directory safe to resume from.

    Args:
        directory: the callback's ``backup_dir``.

    Returns:
        ``"none"`` (no backup), ``"whole"`` (the current backup loads), ``"previous"`` (it was
        broken and the previous one, ``*.bkp``, replaced it) or ``"removed"`` (it was broken
        and there was no whole previous one: the backup files are gone, the run starts again).
    """
    names = (BACKUP_METADATA, BACKUP_WEIGHTS)
    current = [os.path.join(directory, name) for name in names]
    if not any(os.path.exists(path) for path in current):
        return "none"
    problem = _pair_problem(directory)
    if problem is None:
        return "whole"
    if _pair_problem(directory, PREVIOUS_SUFFIX) is None:
        for path in current:
            os.replace(path + PREVIOUS_SUFFIX, path)
        files.fsync_dir(directory)
        logger.warning("The backup in %s was cut short by a kill (%s); resuming from the "
                       "previous backup (epoch %d) instead", directory, problem,
                       read_backup_epoch(current[0]))
        return "previous"
    for path in current:
        for candidate in (path, path + PREVIOUS_SUFFIX):
            if os.path.exists(candidate):
                os.remove(candidate)
    logger.warning("The backup in %s was cut short by a kill (%s) and there is no whole "
                   "previous backup: the run starts again from scratch", directory, problem)
    return "removed"


def check_creatable(path, argument: str, flag: str) -> None:
    """Creates the directory ``path`` and a file in it, then removes what it created: finds
    before any work a directory the run could not write (``/proc/x``, ``/sys/...``, where
    ``os.access`` answers yes for root).

    Raises:
        ValueError: naming ``argument``, its command-line ``flag``, the path and the OS's
            reason.
    """
    path = os.path.abspath(os.fspath(path))
    created = []
    probe = path
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        created.append(probe)
        probe = os.path.dirname(probe)
    try:
        os.makedirs(path, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=".write-check-", dir=path)
        os.close(handle)
        os.remove(temporary)
    except OSError as error:
        raise ValueError(f"{argument} ({flag}) {path!r} cannot be created or written: "
                         f"{error.strerror or error}") from None
    finally:
        for directory in created:  # the deepest first
            try:
                os.rmdir(directory)
            except OSError:
                pass
