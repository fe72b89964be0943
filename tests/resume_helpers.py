"""What the mid-epoch SIGKILL tests (streamed and in-memory data) check of their two runs."""

import json
import os
import signal
import time

import keras
import numpy as np
import pytest


def assert_killed_run_matches_whole_run(runs, custom_objects=None):
    """``runs/killed`` (SIGKILLed mid-epoch, then resumed) ended where ``runs/whole`` did: the
    same weights and test loss, and its backup removed."""
    whole = keras.models.load_model(runs / "whole" / "model.keras", custom_objects,
                                    compile=False)
    killed = keras.models.load_model(runs / "killed" / "model.keras", custom_objects,
                                     compile=False)
    for x, y in zip(whole.get_weights(), killed.get_weights()):
        np.testing.assert_allclose(x, y, rtol=1e-6, atol=1e-7)
    whole_metrics = json.loads((runs / "whole" / "metrics.json").read_text())
    killed_metrics = json.loads((runs / "killed" / "metrics.json").read_text())
    assert killed_metrics["test_loss"] == pytest.approx(whole_metrics["test_loss"], rel=1e-6)
    assert not (runs / "killed" / "backup").exists()


def kill_after_a_mid_epoch_backup(process, metadata, timeout):
    """SIGKILLs ``process`` once its backup (``metadata``: ``training_metadata.json``) holds a
    batch of its second epoch; returns that backup's metadata."""
    deadline = time.time() + timeout
    while time.time() < deadline and process.poll() is None:
        try:
            state = json.loads(metadata.read_text())
        except (OSError, ValueError):  # not there yet, or being written in place
            state = {}
        if state.get("epoch") == 1 and state.get("batch", -1) >= 1:
            break
        time.sleep(0.01)
    assert process.poll() is None, process.stdout.read().decode()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    return json.loads(metadata.read_text())
