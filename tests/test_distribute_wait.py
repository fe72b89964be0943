"""A multi-worker task waits for its peers with a deadline, says whom it waits for, and stops at
SIGTERM / SIGINT: real sockets on 127.0.0.1 and real ``keras-resnet train`` processes."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from keras_resnet.distribute import cluster as cluster_module
from keras_resnet.distribute.cluster import Cluster, WorkerTimeoutError, wait_for_peers
from net_helpers import free_ports

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cluster(ports, index=0):
    return Cluster(tasks={"worker": tuple(f"127.0.0.1:{p}" for p in ports)},
                   task_type="worker", task_index=index)


def test_peers_name_every_other_task():
    cluster = Cluster(tasks={"chief": ("a:1",), "worker": ("b:2", "c:3")}, task_type="worker",
                      task_index=0)
    assert cluster.peers() == [("chief", 0, "a:1"), ("worker", 1, "c:3")]
    assert cluster.address == "b:2"


def test_a_listening_peer_ends_the_wait_at_once():
    peer = socket.socket()
    peer.bind(("127.0.0.1", 0))
    peer.listen()
    own = free_ports(1)[0]
    try:
        start = time.monotonic()
        wait_for_peers(_cluster([own, peer.getsockname()[1]]), timeout=5)
        assert time.monotonic() - start < 2
    finally:
        peer.close()


def test_a_missing_peer_times_out_naming_it(caplog):
    own, missing = free_ports(2)
    caplog.set_level("INFO", logger=cluster_module.__name__)
    start = time.monotonic()
    with pytest.raises(WorkerTimeoutError,
                       match=rf"^worker 0 waited 1 s \(worker_timeout\) for worker 1 at "
                             rf"127\.0\.0\.1:{missing}; start every task"):
        wait_for_peers(_cluster([own, missing]), timeout=1)
    assert 1 <= time.monotonic() - start < 3
    assert f"waiting for worker 1 at 127.0.0.1:{missing}" in caplog.text


def test_two_waiting_tasks_see_each_other():
    """Each task listens on its own port while it waits, so two tasks waiting for each other
    both finish, and free their ports for TensorFlow's server (here a plain listener)."""
    import threading

    ports = free_ports(2)
    errors, servers = [], []

    def task(index):
        try:
            wait_for_peers(_cluster(ports, index), timeout=10)
            server = socket.socket()
            server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            server.bind(("127.0.0.1", ports[index]))
            server.listen()
            servers.append(server)
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=task, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(15)
    for server in servers:
        server.close()
    assert errors == [] and len(servers) == 2


def _train(tmp_path, ports, *flags):
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="-1")
    env["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"127.0.0.1:{p}" for p in ports]},
                                   "task": {"type": "worker", "index": 0}})
    return subprocess.Popen([sys.executable, "-m", "keras_resnet", "train", "--strategy",
                             "multi-worker", "--epochs", "1", "--out", str(tmp_path / "runs"),
                             "--no-export", *flags], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_train_stops_when_a_worker_never_starts(tmp_path):
    ports = free_ports(2)
    start = time.monotonic()
    process = _train(tmp_path, ports, "--worker-timeout", "3")
    try:
        out, err = process.communicate(timeout=60)
    finally:
        process.kill()
    elapsed = time.monotonic() - start
    assert process.returncode == 2, (out, err)
    assert f"waiting for worker 1 at 127.0.0.1:{ports[1]}" in out
    assert err.strip().splitlines()[-1] == (
        f"keras-resnet train: error: worker 0 waited 3 s (--worker-timeout) for worker 1 at "
        f"127.0.0.1:{ports[1]}; start every task of TF_CONFIG's cluster, check the addresses "
        "and firewalls, or raise --worker-timeout")
    assert elapsed < 15 + 10  # TensorFlow's import on a busy machine, then the 3 s


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_the_wait_within_seconds(tmp_path, signum):
    ports = free_ports(2)
    process = _train(tmp_path, ports)
    try:
        line = ""
        deadline = time.monotonic() + 60
        while "waiting for worker 1" not in line and time.monotonic() < deadline:
            line = process.stdout.readline()
        assert f"waiting for worker 1 at 127.0.0.1:{ports[1]}" in line
        sent = time.monotonic()
        process.send_signal(signum)
        process.wait(timeout=30)
        # the wait stops within a probe interval; the rest is the interpreter's exit with
        # TensorFlow loaded, on a busy machine
        assert time.monotonic() - sent < 10
    finally:
        process.kill()
    assert process.returncode == 128 + signum
    assert f"stopped by {signal.Signals(signum).name} while waiting" in process.stdout.read()


def test_train_config_checks_worker_timeout():
    from keras_resnet.training.config import TrainConfig

    assert TrainConfig().worker_timeout == 600
    with pytest.raises(ValueError, match=r"worker_timeout must be .*; got -1"):
        TrainConfig(worker_timeout=-1)
