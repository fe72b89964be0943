"""Two real worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy, TF_CONFIG per process,
CPU only) against Keras' own ``Model.fit`` in one process on the same global batch."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from net_helpers import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "tests", "distribute_worker.py")


def start(settings, tf_config=None, log=None, temp_dir=None):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    if temp_dir is not None:  # where a non-chief worker's temporary directory goes
        env["TMPDIR"] = str(temp_dir)
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen([sys.executable, SCRIPT, json.dumps(settings)], env=env, cwd=ROOT,
                            stdout=log or subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def start_workers(tmp_path, settings, workers=2, tag="w", temp_tag=None):
    addresses = [f"127.0.0.1:{port}" for port in free_ports(workers)]
    processes = []
    for index in range(workers):
        config = {"cluster": {"worker": addresses}, "task": {"type": "worker", "index": index}}
        log = open(tmp_path / f"{tag}{index}.log", "w")
        temp_dir = tmp_path / f"{temp_tag or tag}{index}-tmp"
        temp_dir.mkdir(exist_ok=True)
        processes.append(start(dict(settings, strategy="multi-worker",
                                    out=str(tmp_path / f"{tag}{index}.npz")), config, log,
                               temp_dir))
    return processes


def wait(processes, timeout):
    deadline = time.monotonic() + timeout
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(max(1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append("hung")
    return codes


def weights(path):
    data = np.load(path)
    return [data[key] for key in sorted((k for k in data.files if k.startswith("arr_")),
                                        key=lambda k: int(k[4:]))], data


def max_difference(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def log_text(tmp_path, name):
    return (tmp_path / name).read_text()


@pytest.mark.slow
def test_two_workers_equal_one_process_and_only_the_chief_writes(tmp_path):
    run_dir = tmp_path / "run"
    settings = {"run_dir": str(run_dir), "batch_size": 32, "steps": 3,
                "export_dir": str(tmp_path / "saved_models")}
    workers = start_workers(tmp_path, settings)
    reference = start(dict(settings, strategy="one-device", engine="keras",
                           out=str(tmp_path / "reference.npz")))
    assert wait(workers + [reference], 240) == [0, 0, 0], log_text(tmp_path, "w1.log")[-3000:]
    chief, chief_data = weights(tmp_path / "w0.npz")
    other, other_data = weights(tmp_path / "w1.npz")
    single, single_data = weights(tmp_path / "reference.npz")
    # 3 SGD steps, 2 workers x 16 images vs 1 process x 32: only the summation order of the
    # all-reduce differs (float32 rounding, ~1e-7 relative per step).
    assert max_difference(chief, single) < 1e-4
    assert max_difference(chief, other) == 0.0  # mirrored: every worker holds the same weights
    assert int(chief_data["step"]) == int(single_data["step"]) == 3
    description = json.loads(str(chief_data["description"]))
    assert {k: description[k] for k in ("strategy", "replicas", "workers", "is_chief")} == {
        "strategy": "multi-worker", "replicas": 2, "workers": 2, "is_chief": True}
    assert json.loads(str(other_data["description"]))["is_chief"] is False
    # Only the chief wrote the run directory (the backup is removed when training ends).
    assert sorted(os.listdir(run_dir)) == ["best.keras", "history.csv", "logs", "model.keras"]
    assert os.listdir(tmp_path / "saved_models" / "digits") == ["1"]
    # Both workers got the same, all-reduced test metrics.
    tests = [[line for line in log_text(tmp_path, f"w{i}.log").splitlines()
              if line.startswith("test ")] for i in (0, 1)]
    assert tests[0] == tests[1] and len(tests[0]) == 1
    lines = (run_dir / "history.csv").read_text().splitlines()
    assert lines[0].split(",") == ["epoch", "accuracy", "loss", "top5_accuracy",
                                   "val_accuracy", "val_loss", "val_top5_accuracy"]
    assert len(lines) == 2
    # The other worker's checkpoints went to a temporary directory it removed.
    assert "keras-resnet-workers/.tmp-" in log_text(tmp_path, "w1.log")
    assert os.listdir(tmp_path / "w1-tmp") == ["keras-resnet-workers"]
    assert os.listdir(tmp_path / "w1-tmp" / "keras-resnet-workers") == []


@pytest.mark.slow
def test_killed_worker_stops_the_other_and_a_restart_resumes(tmp_path):
    """SIGKILL of worker 1 after epoch 2 of 4: worker 0 stops with a clear error within the
    collective timeout (10 s here) instead of hanging; the same command on both workers then
    resumes from the last backup, with the optimizer's step (so the schedule) where it was."""
    run_dir = tmp_path / "run"
    settings = {"run_dir": str(run_dir), "batch_size": 32, "steps": 2, "epochs": 4,
                "timeout": 10.0, "sleep": 2.0}
    first = start_workers(tmp_path, settings, tag="first", temp_tag="w")
    deadline = time.monotonic() + 120
    while "epoch 1" not in log_text(tmp_path, "first0.log"):
        assert time.monotonic() < deadline and first[0].poll() is None, \
            log_text(tmp_path, "first0.log")[-3000:]
        time.sleep(0.2)
    first[1].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    codes = wait(first, 60)
    stopped_after = time.monotonic() - killed_at
    chief_log = log_text(tmp_path, "first0.log")
    assert codes[0] not in (0, "hung"), chief_log[-3000:]
    assert codes[1] == -signal.SIGKILL
    print("stopped after", round(stopped_after, 1), "s")
    assert stopped_after < 40, stopped_after
    assert "WorkerError: training stopped: a worker stopped answering" in chief_log, \
        chief_log[-3000:]
    assert "run the same command on every worker to resume from the last backup" in chief_log
    backup = json.loads((run_dir / "backup" / "training_metadata.json").read_text())
    assert backup["epoch"] == 2
    # The killed worker could not remove its temporary directory...
    staging = tmp_path / "w1-tmp" / "keras-resnet-workers"
    [left] = os.listdir(staging)
    assert left.startswith(f".tmp-{first[1].pid}-worker-")

    second = start_workers(tmp_path, dict(settings, sleep=0), tag="second", temp_tag="w")
    assert wait(second, 180) == [0, 0], log_text(tmp_path, "second1.log")[-3000:]
    assert os.listdir(staging) == []  # ...the restarted worker on that machine removed it
    _, data = weights(tmp_path / "second0.npz")
    # 2 epochs before the kill + 2 after, 2 steps each: the step count (and with it the
    # learning-rate schedule) went on from the backup instead of starting again.
    assert int(data["step"]) == 8
    assert float(data["learning_rate"]) == pytest.approx(0.001)
    epochs = [line.split(",")[0] for line in
              (run_dir / "history.csv").read_text().splitlines()[1:]]
    assert epochs == ["0", "1", "2", "3"]
    assert not (run_dir / "backup").exists()


@pytest.mark.slow
def test_benchmark_script_measures_the_three_setups():
    done = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "distributed_steps.py"),
                           "--steps", "2", "--batch", "16"],
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"),
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert [line.split()[:2] for line in lines] == [
        ["one-device", "x1"], ["mirrored", "x2"], ["multi-worker", "x2"]]
    assert all(float(line.split()[3]) > 0 for line in lines)
