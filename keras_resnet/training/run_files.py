"""The files of a run directory (``runs/<name>/``) and what an earlier, killed run left there."""

from __future__ import annotations

import dataclasses
import json
import os

from keras_resnet import files


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
        return os.path.join(self.path("backup"), "training_metadata.json")

    def resume_marker(self):
        """A file that shows an earlier run of this directory was killed, or None."""
        for path in (self.backup_metadata, *self.phase_markers()):
            if os.path.exists(path):
                return path
        return None

    def phase_markers(self):
        """Fine-tuning's per-phase backups and the finished head (see ``finetuning``)."""
        return (os.path.join(self.path("backup"), "head", "training_metadata.json"),
                os.path.join(self.path("backup"), "fine_tune", "training_metadata.json"),
                os.path.join(self.run_dir, "head.weights.h5"))

    def backed_up_step_note(self):
        """For a backup written mid-epoch (``backup_every_steps``): which step it holds."""
        try:
            with open(self.backup_metadata) as file:
                batch = int(json.load(file).get("batch", 0))
        except (OSError, ValueError):
            return ""
        if batch < 0:  # an epoch-end backup (keras_resnet.data.position.PositionBackup)
            return ""
        return (f" (weights and optimizer as backed up after its step {batch + 1}; streamed "
                "data goes on after that step, in-memory data starts the epoch again)")

    def prepare(self):
        """Creates the run directory; returns the epoch a killed run resumes from, or None."""
        os.makedirs(self.run_dir, exist_ok=True)
        files.remove_stale_temporaries(self.run_dir)
        if self.resume_marker() is None:
            # A fresh run: no stale history or checkpoints from an earlier one.
            for key in ("model", "best", "history", "metrics"):
                if os.path.exists(self.path(key)):
                    os.remove(self.path(key))
            return None
        if not os.path.exists(self.backup_metadata):
            return 0  # a fine-tuning run; it finds its phase itself
        with open(self.backup_metadata) as file:
            return int(json.load(file).get("epoch", 0))
