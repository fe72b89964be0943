"""Runs one script as several tf.distribute workers on 127.0.0.1 (shared by the distributed
benchmarks): free ports from the OS, a TF_CONFIG per worker, CPU only; returns the chief's
last JSON line."""

import json
import os
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_workers(script, arguments, workers=2, timeout=1800):
    """Starts ``script --child ARGUMENTS`` as ``workers`` workers; returns the chief's result."""
    sockets = [socket.socket() for _ in range(workers)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    addresses = [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]
    for s in sockets:
        s.close()
    processes = []
    for index in range(workers):
        env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="-1",
                   TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
                       {"cluster": {"worker": addresses},
                        "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, script, "--child", *arguments], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
    results = [json.loads(p.communicate(timeout=timeout)[0].strip().splitlines()[-1])
               for p in processes]
    return next(r for r in results if r["is_chief"])


def epoch_timer():
    """A Keras callback whose ``seconds`` is the duration of the last epoch (imports Keras
    only when called: the launcher itself stays TensorFlow-free)."""
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds = time.perf_counter() - self.started

    return EpochTimer()
