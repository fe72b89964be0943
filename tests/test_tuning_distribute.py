"""Tuning with tf.distribute (KerasTuner's distribution_strategy) and trials in fresh processes
(flat tuner memory)."""

import json
import os

import pytest

from keras_resnet.tuning import tune
from keras_resnet.tuning.results import read_trial_runs
from tests.test_distribute import run_python
from tests.test_tuning import TINY


@pytest.mark.parametrize("kwargs, error, message", [
    ({"strategy": "multi-worker"}, ValueError, "strategy must be one of 'auto', 'one-device', "
                                               "'mirrored'; got 'multi-worker'"),
    ({"trial_process": "thread"}, ValueError, "trial_process must be one of 'auto', 'same', "
                                              "'fresh', 'recycled'; got 'thread'"),
    ({"trials_per_process": 0}, ValueError, r"trials_per_process must be a positive int "
                                            r"\(1, 2, 64, ...\); got 0"),
    ({"devices": "/cpu:0"}, TypeError, r"devices must be a non-empty list of device names "
                                       r"\(e.g. \['/gpu:0', '/gpu:1'\]\) or None; got '/cpu:0'"),
    ({"strategy": "one-device", "devices": ["/cpu:0", "/cpu:1"]}, ValueError,
     r"strategy 'one-device' takes one device; got devices=\['/cpu:0', '/cpu:1'\]"),
])
def test_bad_strategy_input_before_the_first_trial(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        tune("digits", directory=str(tmp_path / "search"), **kwargs)
    assert not (tmp_path / "search").exists()


@pytest.mark.parametrize("mode", ["fresh", "recycled"])
def test_trial_processes_need_data_a_process_can_load(tmp_path, mode):
    from keras_resnet.data import load_dataset

    data = load_dataset("digits", batch_size=32)
    with pytest.raises(ValueError, match=rf"trial_process='{mode}' needs data a trial process "
                                         r"can load \(a data set name or a folder\); got "
                                         r"Dataset.*: pass trial_process='same'"):
        tune(data, directory=str(tmp_path / "search"), trial_process=mode)
    assert not (tmp_path / "search").exists()


def test_auto_runs_trials_in_this_process_for_an_in_memory_dataset(tmp_path):
    from keras_resnet.data import load_dataset

    data = load_dataset("digits", batch_size=32)
    messages = []
    result = tune(data, directory=str(tmp_path), max_trials=1, export_dir=None, log=messages.append,
                  **dict(TINY, steps_per_epoch=1))
    assert messages[0].startswith("Trials run in this process (trial_process='auto'): needs "
                                  "data a trial process can load")
    assert [run["pid"] for run in read_trial_runs(result.project_dir)] == [os.getpid()]


def test_cli_refuses_multi_worker_tuning(tmp_path, capsys):
    from keras_resnet.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--strategy", "multi-worker", "--directory", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "argument --strategy: invalid choice: 'multi-worker'" in capsys.readouterr().err


@pytest.mark.slow
def test_mirrored_trials_on_two_logical_cpus(tmp_path):
    out = run_python(f"""
import json
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from keras_resnet.tuning import tune
# trial_process="same": the logical devices are this process's TensorFlow configuration
result = tune("digits", directory={str(tmp_path)!r}, max_trials=1, export_dir=None,
              trial_process="same",
              strategy="mirrored", devices=["/cpu:0", "/cpu:1"], epochs=1, steps_per_epoch=2,
              depth=8, width_multiplier=0.5, batch_size=32)
replicas = result.tuner.distribution_strategy.num_replicas_in_sync
print(json.dumps({{"distribution": result.distribution, "replicas": replicas,
                  "status": [row["status"] for row in result.rows],
                  "project_dir": result.project_dir}}))
""", timeout=300)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["replicas"] == 2
    assert report["status"] == ["completed"]
    assert report["distribution"]["strategy"] == "mirrored"
    assert report["distribution"]["replicas"] == 2
    assert [d.lower().split("device:")[-1] for d in report["distribution"]["devices"]] == \
        ["cpu:0", "cpu:1"]
    with open(os.path.join(report["project_dir"], "tune_config.json")) as file:
        recorded = json.load(file)
    assert recorded["strategy"] == "mirrored" and recorded["devices"] == ["/cpu:0", "/cpu:1"]
    assert recorded["distribution"] == report["distribution"]


@pytest.mark.slow
def test_fresh_trial_processes_run_each_trial_in_its_own_process_and_resume(tmp_path):
    options = dict(TINY, steps_per_epoch=2, directory=str(tmp_path), export_dir=None,
                   project_name="fresh", trial_process="fresh")
    first = tune("digits", max_trials=2, **options)
    runs = read_trial_runs(first.project_dir)
    assert first.ran == [run["trial_id"] for run in runs] and len(runs) == 2
    pids = [run["pid"] for run in runs]
    assert len(set(pids)) == 2 and os.getpid() not in pids
    assert [row["status"] for row in first.rows] == ["completed", "completed"]
    assert first.best is not None and first.distribution["strategy"] == "one-device"
    # The same call with more trials resumes: the two finished trials are kept.
    second = tune("digits", max_trials=3, **options)
    assert second.resumed and len(second.ran) == 1 and second.ran[0] not in first.ran
    assert len(second.rows) == 3
    runs = read_trial_runs(first.project_dir)
    assert len({run["pid"] for run in runs}) == 3 and all(run["rss_mib"] > 0 for run in runs)


@pytest.mark.slow
def test_recycled_trial_processes_run_up_to_k_trials_each(tmp_path):
    """The default (``"auto"`` for data by name): processes of up to ``trials_per_process``
    trials, the oracle's trials in its order, the tuner's own process runs none."""
    messages = []
    result = tune("digits", max_trials=5, trials_per_process=2, directory=str(tmp_path),
                  export_dir=None, log=messages.append, **dict(TINY, steps_per_epoch=1))
    runs = read_trial_runs(result.project_dir)
    assert result.ran == [run["trial_id"] for run in runs] == ["0", "1", "2", "3", "4"]
    pids = [run["pid"] for run in runs]
    assert os.getpid() not in pids
    assert [pids.count(pid) for pid in dict.fromkeys(pids)] == [2, 2, 1]
    assert [row["status"] for row in result.rows] == ["completed"] * 5
    assert sum(" done in process " in message for message in messages) == 5
    assert json.loads((tmp_path / "cifar-digits-random" / "tune_config.json").read_text())[
        "trials_per_process"] == 2


def _children(pid):
    children = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/stat") as file:
                fields = file.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if entry.isdigit() and int(fields[1]) == pid:
            children.append(int(entry))
    return children


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="reads /proc (Linux)")
def test_sigkill_of_a_fresh_search_kills_its_trial_process_and_the_search_resumes(tmp_path):
    import signal
    import subprocess
    import time

    from tests.test_tuning import ROOT, TINY_CLI, _cli, _env

    command = _cli("--max-trials", "2", "--directory", str(tmp_path), "--project", "p",
                   "--trial-process", "fresh", *TINY_CLI)
    project = tmp_path / "p"
    process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 150
    while not (project / "trial_1" / "trial.json").exists():  # trial 0 done, trial 1 running
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.2)
    children = _children(process.pid)
    assert len(children) == 1  # trial 1's process
    process.send_signal(signal.SIGKILL)
    process.wait()
    deadline = time.time() + 10
    while os.path.exists(f"/proc/{children[0]}") and time.time() < deadline:
        time.sleep(0.1)  # PR_SET_PDEATHSIG: it dies with the tuner (a zombie until reaped)
    if os.path.exists(f"/proc/{children[0]}"):
        with open(f"/proc/{children[0]}/stat") as file:
            assert file.read().rsplit(")", 1)[1].split()[0] == "Z"
    assert [r["trial_id"] for r in read_trial_runs(project)] == ["0"]

    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=200)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Resuming" in done.stdout
    runs = read_trial_runs(project)
    assert [r["trial_id"] for r in runs] == ["0", "1"]  # 1 ran again, 0 was kept
    assert len({r["pid"] for r in runs} | {process.pid, children[0]}) == 4


@pytest.mark.slow
def test_memory_benchmark_reports_rss_per_trial(tmp_path):
    import subprocess
    import sys

    from tests.test_tuning import ROOT, _env

    out = tmp_path / "memory.json"
    done = subprocess.run([sys.executable, "benchmarks/distributed_tune_memory.py", "--trials",
                           "2", "--trial-process", "same", "--json", str(out)], cwd=ROOT,
                          env=_env(PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["trials"] == 2 and figures["distinct_pids"] == 1
    assert len(figures["trial_rss_mib"]) == 2 and figures["after_2"] > 0
    assert figures["after_2"] == figures["trial_rss_mib"][1] and figures["growth_mib"] == 0.0
