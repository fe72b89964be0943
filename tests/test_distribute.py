"""Strategy choice and TF_CONFIG checks (``keras_resnet.distribute``)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from keras_resnet import distribute
from keras_resnet.distribute import choose_strategy, read_cluster, scaled_learning_rate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tf_config(workers=2, task_type="worker", index=0, chief=False):
    cluster = {"worker": [f"127.0.0.1:{2000 + i}" for i in range(workers)]}
    if chief:
        cluster["chief"] = ["127.0.0.1:1999"]
    return {"TF_CONFIG": json.dumps({"cluster": cluster,
                                     "task": {"type": task_type, "index": index}})}


def run_python(code, env=None, timeout=120):
    """Runs ``code`` in a fresh Python (TF state is per process); returns its stdout."""
    environ = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2",
                   CUDA_VISIBLE_DEVICES="-1")
    environ.pop("TF_CONFIG", None)
    environ.update(env or {})
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=environ,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.parametrize("environ, gpus, expected", [
    ({}, 0, "one-device"),
    ({}, 1, "one-device"),
    ({}, 2, "mirrored"),
    (tf_config(workers=2), 0, "multi-worker"),
    (tf_config(workers=1, chief=True, task_type="chief"), 4, "multi-worker"),
    (tf_config(workers=1), 0, "one-device"),  # one task: nothing to distribute over
    (tf_config(workers=1), 2, "mirrored"),
])
def test_auto_choice_from_tf_config_and_gpus(environ, gpus, expected):
    assert choose_strategy("auto", environ=environ, gpus=gpus) == expected


@pytest.mark.parametrize("text, message", [
    ("{not json", r"TF_CONFIG must be JSON like .*got '\{not json' \(Expecting property name"),
    ("[1, 2]", r"TF_CONFIG must be a JSON object with \"cluster\" and \"task\"; got '\[1, 2\]'"),
    (json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}}),
     r"TF_CONFIG must name this process's task .*got task None"),
    (json.dumps({"cluster": {"worker": ["127.0.0.1:1"]}, "task": {"type": "chief"}}),
     r"TF_CONFIG's task type must be one of the cluster's \(worker\); got 'chief'"),
    (json.dumps({"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]},
                 "task": {"type": "worker", "index": 2}}),
     r"TF_CONFIG's task index must be an int in \[0, 1\] \(the cluster has 2 worker "
     r"address\(es\)\); got 2"),
    (json.dumps({"cluster": {"ps": ["127.0.0.1:1"]}, "task": {"type": "ps"}}),
     r"cluster task types must be among chief, worker .*got 'ps'"),
    (json.dumps({"cluster": {"worker": ["localhost"]}, "task": {"type": "worker"}}),
     r"addresses must be \"host:port\"; got 'localhost'"),
    (json.dumps({"cluster": {"worker": "127.0.0.1:1"}, "task": {"type": "worker"}}),
     r"must be a non-empty list of \"host:port\" addresses; got '127.0.0.1:1'"),
])
def test_bad_tf_config_is_a_value_error(text, message):
    with pytest.raises(ValueError, match=message):
        read_cluster({"TF_CONFIG": text})
    with pytest.raises(ValueError, match=message):
        choose_strategy("auto", environ={"TF_CONFIG": text}, gpus=0)


def test_cluster_roles():
    assert read_cluster({}) is None
    assert read_cluster({"TF_CONFIG": json.dumps({"task": {"type": "worker"}})}) is None
    worker0 = read_cluster(tf_config(workers=2, index=0))
    worker1 = read_cluster(tf_config(workers=2, index=1))
    assert (worker0.num_workers, worker0.is_chief, worker1.is_chief) == (2, True, False)
    with_chief = tf_config(workers=2, index=0, chief=True)
    assert not read_cluster(with_chief).is_chief
    assert read_cluster(tf_config(workers=2, task_type="chief", chief=True)).is_chief
    assert read_cluster(with_chief).num_workers == 3


def test_strategy_misuse_is_a_value_error():
    with pytest.raises(ValueError, match=r"strategy 'multi-worker' needs TF_CONFIG .*got no "
                                         r"TF_CONFIG"):
        choose_strategy("multi-worker", environ={})
    with pytest.raises(ValueError, match=r"strategy 'mirrored' trains on one machine but "
                                         r"TF_CONFIG names 2 tasks"):
        choose_strategy("mirrored", environ=tf_config(workers=2))
    with pytest.raises(ValueError, match=r"strategy must be one of .*got 'horovod'"):
        choose_strategy("horovod", environ={})
    with pytest.raises(TypeError, match=r"devices must be a non-empty list of device names "
                                        r".*got '/gpu:0'"):
        distribute.make_strategy("mirrored", devices="/gpu:0")
    with pytest.raises(ValueError, match=r"strategy 'one-device' takes one device; got "
                                         r"devices=\['/cpu:0', '/cpu:1'\]"):
        distribute.make_strategy("one-device", devices=["/cpu:0", "/cpu:1"])
    with pytest.raises(ValueError, match=r"collective_timeout must be .*got 0"):
        distribute.make_strategy("one-device", collective_timeout=0)


@pytest.mark.slow
def test_bad_tf_config_fails_before_tensorflow_starts():
    # Logical devices can only be configured before the TF runtime starts: that this works
    # after the error proves make_strategy checked TF_CONFIG before any TensorFlow work.
    out = run_python("""
        import tensorflow as tf
        from keras_resnet.distribute import make_strategy
        for name in ("multi-worker", "auto"):
            try:
                make_strategy(name)
            except ValueError as error:
                print(type(error).__name__)
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        print(len(tf.config.list_logical_devices("CPU")))
    """, env={"TF_CONFIG": '{"cluster": {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}, '
                           '"task": {"type": "worker", "index": 5}}'})
    assert out.split() == ["ValueError", "ValueError", "2"]


def test_one_device_in_process():
    import tensorflow as tf

    strategy, description = distribute.make_strategy("one-device")
    assert strategy is tf.distribute.get_strategy()  # the default: no scope needed
    assert type(distribute.make_strategy("one-device", devices=["/cpu:0"])[0]).__name__ == \
        "OneDeviceStrategy"
    assert description == {"strategy": "one-device", "replicas": 1, "workers": 1,
                           "task_type": None, "task_index": None, "is_chief": True,
                           "devices": [description["devices"][0]]}
    assert description["devices"] in (["/cpu:0"], ["/gpu:0"])


def test_replicate_keeps_a_default_strategy_model_and_copies_into_a_scope():
    import keras
    import numpy as np
    import tensorflow as tf

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2),
                              keras.layers.BatchNormalization()])
    assert distribute.replicate(model, tf.distribute.get_strategy()) is model
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    copy = distribute.replicate(model, strategy, sync_bn=True)
    assert copy is not model and copy.layers[-1].synchronized
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), copy.get_weights()))
    with pytest.raises(TypeError, match=r"sync_bn must be .*got 'yes'"):
        distribute.replicate(model, strategy, sync_bn="yes")


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus():
    out = run_python("""
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        from keras_resnet.distribute import make_strategy
        strategy, description = make_strategy("auto", devices=["/cpu:0", "/cpu:1"])
        print(json.dumps([type(strategy).__name__, description]))
    """)
    name, description = json.loads(out)
    assert name == "MirroredStrategy"
    assert (description["strategy"], description["replicas"], description["workers"],
            description["is_chief"]) == ("mirrored", 2, 1, True)
    assert [d[-5:] for d in description["devices"]] == ["CPU:0", "CPU:1"]


def test_mirrored_on_one_device_says_so(caplog):
    caplog.set_level("INFO", logger="keras_resnet.distribute.strategy")
    strategy, description = distribute.make_strategy("mirrored", devices=["/cpu:0"])
    assert description["replicas"] == 1
    lines = [r.getMessage() for r in caplog.records if "MirroredStrategy" in r.getMessage()]
    assert len(lines) == 1 and lines[0].startswith("MirroredStrategy has 1 device (")


def test_worker_timeout_is_checked_before_anything_starts():
    with pytest.raises(ValueError, match=r"worker_timeout must be .*got 0"):
        distribute.make_strategy("one-device", worker_timeout=0)


@pytest.mark.parametrize("rate, batch, base, expected", [
    (0.1, 128, 128, 0.1), (0.1, 256, 128, 0.2), (0.1, 32, 128, 0.025), (0.4, 64, 32, 0.8)])
def test_scaled_learning_rate(rate, batch, base, expected):
    assert scaled_learning_rate(rate, batch, base_batch_size=base) == pytest.approx(expected)


def test_scaled_learning_rate_checks():
    with pytest.raises(ValueError, match=r"batch_size must be a positive int .*got 0"):
        scaled_learning_rate(0.1, 0)
    with pytest.raises(TypeError, match=r"learning_rate must be .*got '0.1'"):
        scaled_learning_rate("0.1", 32)


@pytest.mark.parametrize("name", ["digits", "synthetic"])
def test_workers_read_disjoint_shards_that_cover_the_training_split(name):
    """What each worker's ``load_dataset(..., input_context=context)`` reads (2 workers, one
    replica each, global batch 32): disjoint halves whose union is the training split."""
    import numpy as np
    import tensorflow as tf

    from keras_resnet.data import load_dataset

    seen = []
    for index in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=index,
                                             num_replicas_in_sync=2)
        data = load_dataset(name, batch_size=32, augment=False, input_context=context,
                            num_examples=200)
        images = np.concatenate([x.numpy() for x, _ in data.train])
        assert max(len(x) for x, _ in data.train) == 16  # the per-replica batch
        seen.append({image.tobytes() for image in images})
    full = load_dataset(name, batch_size=32, augment=False, num_examples=200)
    everything = {image.tobytes() for x, _ in full.train for image in x.numpy()}
    assert not seen[0] & seen[1]
    assert seen[0] | seen[1] == everything
    assert abs(len(seen[0]) - len(seen[1])) <= 1


@pytest.mark.parametrize("size, batch, workers, expected", [
    (1293, 32, 2, 40), (144, 32, 2, 4), (145, 32, 2, 4), (10, 32, 2, 1), (1293, 32, 1, 40)])
def test_steps_for(size, batch, workers, expected):
    assert distribute.steps_for(size, batch, workers) == expected


@pytest.mark.parametrize("size, batch, workers, replicas, expected", [
    (1293, 32, 2, 4, 40), (1293, 48, 2, 8, 26), (1293, 32, 1, 4, 40), (145, 32, 2, 2, 4),
    (10, 32, 2, 8, 1)])
def test_steps_for_several_replicas_per_worker(size, batch, workers, replicas, expected):
    assert distribute.steps_for(size, batch, workers, replicas) == expected


def test_steps_for_checks():
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 4; got 2"):
        distribute.steps_for(100, 2, 4)
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 8; got 4"):
        distribute.steps_for(100, 4, 2, 8)
    with pytest.raises(ValueError, match=r"batch_size must be a multiple of the 4 replicas "
                                         r"\(each takes batch_size // replicas images per "
                                         r"step\); got 34"):
        distribute.steps_for(100, 34, 2, 4)
    with pytest.raises(ValueError, match=r"replicas must be a multiple of the 2 workers "
                                         r"\(every worker has as many\); got 3"):
        distribute.steps_for(100, 32, 2, 3)
    with pytest.raises(ValueError, match=r"replicas must be an int >= 2; got 1"):
        distribute.steps_for(100, 32, 2, 1)
    with pytest.raises(TypeError, match=r"replicas must be an int >= 2; got 2.0"):
        distribute.steps_for(100, 32, 2, 2.0)


@pytest.mark.parametrize("workers, replicas", [(2, 4), (1, 2), (2, 2)])
def test_steps_for_is_what_every_worker_s_shard_holds(workers, replicas):
    """Each worker's real pipeline (``load_dataset`` with a real ``InputContext``) holds
    exactly ``steps_for`` steps of its replicas' per-replica batches, the smallest one none
    more: each of a worker's ``replicas // workers`` replicas takes one batch per step."""
    import tensorflow as tf

    from keras_resnet.data import load_dataset

    batch, size = 24, 300
    local = replicas // workers
    full_steps = []
    for index in range(workers):
        context = tf.distribute.InputContext(num_input_pipelines=workers,
                                             input_pipeline_id=index,
                                             num_replicas_in_sync=replicas)
        data = load_dataset("synthetic", batch_size=batch, augment=False, input_context=context,
                            num_examples=size)
        sizes = [len(x) for x, _ in data.train]
        assert max(sizes) == batch // replicas
        full_steps.append(sizes.count(batch // replicas) // local)
    assert min(full_steps) == distribute.steps_for(data.train_size, batch, workers, replicas)


def test_a_killed_worker_s_temporary_directory_is_removed_by_the_next_worker(tmp_path,
                                                                            monkeypatch):
    """A real non-chief worker process killed (SIGKILL) inside ``worker_dir`` leaves its
    directory in $TMPDIR; the next worker started on the machine removes it."""
    import signal
    import tempfile

    temporary = tmp_path / "tmp"
    temporary.mkdir()
    (tmp_path / "run" / "backup").mkdir(parents=True)
    (tmp_path / "run" / "backup" / "training_metadata.json").write_text('{"epoch": 1}')
    code = textwrap.dedent(f"""
        import sys, time
        from keras_resnet.distribute.step_loop import worker_dir
        with worker_dir({str(tmp_path / "run")!r}, is_chief=False) as directory:
            print(directory, flush=True)
            time.sleep(600)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                               env={**os.environ, "TMPDIR": str(temporary),
                                    "PYTHONPATH": ROOT})
    killed = process.stdout.readline().strip()
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    parent = temporary / "keras-resnet-workers"
    assert os.path.dirname(killed) == str(parent)
    assert os.path.basename(killed).startswith(f".tmp-{process.pid}-worker-")
    assert os.path.isfile(os.path.join(killed, "backup", "training_metadata.json"))

    monkeypatch.setattr(tempfile, "tempdir", str(temporary))
    live = parent / f".tmp-{os.getpid()}-worker-concurrent"  # a live worker's: kept
    live.mkdir()
    with distribute.worker_dir(str(tmp_path / "run"), is_chief=False) as directory:
        assert not os.path.exists(killed)
        assert sorted(os.listdir(parent)) == sorted([live.name, os.path.basename(directory)])
    assert os.listdir(parent) == [live.name]
    assert os.listdir(tmp_path / "run") == ["backup"]  # workers never write the run
