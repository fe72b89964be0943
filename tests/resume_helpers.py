"""What the mid-epoch SIGKILL tests (streamed and in-memory data) check of their two runs."""

import json

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
