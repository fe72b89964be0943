"""TensorFlow's own log lines, hidden from a command's output unless asked for
(``keras-resnet --verbose CMD`` or ``KERAS_RESNET_VERBOSE=1``).

Two kinds: the lines TensorFlow's C++ runtime logs while it works (the ``cuInit`` probe, tf.data
graph notes, libjpeg warnings, ``Local rendezvous is aborting``), which ``TF_CPP_MIN_LOG_LEVEL=3``
hides; and the notes its shared libraries log while ``import tensorflow`` loads them (oneDNN,
CPU features, ``Could not find cuda drivers``), written before absl's logging is set up and so
deaf to that variable: those are taken off stderr for the import and every other line it wrote
is put back. Numerics (``TF_ENABLE_ONEDNN_OPTS``) and devices (``CUDA_VISIBLE_DEVICES``) are
left alone.
"""

from __future__ import annotations

import importlib.util
import os
import re
import sys
import tempfile

VERBOSE_ENV = "KERAS_RESNET_VERBOSE"  # "1": TensorFlow's own log lines, as --verbose
# A C++ log line (glog/absl format, not FATAL), absl's pre-initialisation notice, and the
# second line of the CPU-feature note.
_NOISE = re.compile(r"^([IWE]\d{4} \d+:\d+:\d+\.\d+ +\d+ [\w.]+:\d+\] |"
                    r"WARNING: All log messages before absl::InitializeLog\(\) is called|"
                    r"To enable the following instructions: .* rebuild TensorFlow with)")


def verbose_requested(flag: bool) -> bool:
    """``--verbose`` given, or ``KERAS_RESNET_VERBOSE`` set to anything but ``0``."""
    return flag or os.environ.get(VERBOSE_ENV, "") not in ("", "0")


def quiet_tensorflow(verbose: bool) -> None:
    """Hides TensorFlow's log lines for this process unless ``verbose`` (must run before
    TensorFlow is imported; a non-empty ``TF_CPP_MIN_LOG_LEVEL`` is kept)."""
    if verbose:
        return
    if not os.environ.get("TF_CPP_MIN_LOG_LEVEL"):
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    if "tensorflow" not in sys.modules and not any(
            isinstance(finder, _QuietImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietImport())


def without_noise(text: str) -> str:
    """``text`` less TensorFlow's load-time log lines."""
    return "".join(line for line in text.splitlines(keepends=True) if not _NOISE.match(line))


class _QuietImport:
    """A one-shot import hook: ``import tensorflow`` runs with file descriptor 2 sent to a
    temporary file, whose lines other than TensorFlow's log lines go back to stderr."""

    finding = False

    def find_spec(self, fullname, path=None, target=None):
        # importlib.util.find_spec("tensorflow") (a check that it is installed) asks too, and
        # loads nothing: the hook leaves only when the import runs.
        if fullname != "tensorflow" or self.finding:
            return None
        self.finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.finding = False
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_quietly(module):
                if self in sys.meta_path:
                    sys.meta_path.remove(self)
                with tempfile.TemporaryFile() as captured:
                    sys.stderr.flush()
                    saved = os.dup(2)
                    os.dup2(captured.fileno(), 2)
                    try:
                        run(module)
                    finally:
                        sys.stderr.flush()
                        os.dup2(saved, 2)
                        os.close(saved)
                        captured.seek(0)
                        sys.stderr.write(without_noise(captured.read().decode(errors="replace")))
                        sys.stderr.flush()

            spec.loader.exec_module = exec_quietly
        return spec
