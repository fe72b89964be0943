"""`keras_resnet.evaluation`: streamed metrics against scikit-learn on whole arrays, top-1 against
`model.evaluate`, bounded memory, Grad-CAM against tf.GradientTape (and on JAX), the report
directory, the CLI's errors and `--server` against a real `keras-resnet serve` process."""

import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as sk

from keras_resnet import CifarResNet, ResNet, compile_model, export_saved_model, load_dataset
from keras_resnet.cli import main
from keras_resnet.evaluation import evaluate, split_head
from keras_resnet.evaluation.metrics import StreamingMetrics


def random_batches(seed, batches, size, classes):
    rng = np.random.default_rng(seed)
    for _ in range(batches):
        logits = rng.normal(size=(size, classes)) * 3
        probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        yield rng.integers(0, classes, size), probabilities.astype(np.float32)


@pytest.mark.parametrize("classes", [3, 12])
def test_streamed_metrics_equal_sklearn_on_the_whole_arrays(classes):
    batches = list(random_batches(0, 7, 33, classes))
    sums = StreamingMetrics(classes, mistakes=5)
    for labels, probabilities in batches:
        sums.update(labels, probabilities, images=probabilities[:, :, None])
    labels = np.concatenate([b[0] for b in batches])
    probabilities = np.concatenate([b[1] for b in batches]).astype(np.float64)
    probabilities /= probabilities.sum(axis=1, keepdims=True)
    predicted = probabilities.argmax(axis=1)
    result = sums.summary([f"c{i}" for i in range(classes)])

    assert result["images"] == len(labels)
    assert result["top1_accuracy"] == sk.accuracy_score(labels, predicted)
    top5 = 1.0 if classes <= 5 else sk.top_k_accuracy_score(labels, probabilities, k=5,
                                                            labels=range(classes))
    assert result["top5_accuracy"] == pytest.approx(top5, abs=1e-12)
    assert result["loss"] == pytest.approx(sk.log_loss(labels, probabilities,
                                                       labels=range(classes)), rel=1e-12)
    assert result["confusion_matrix"] == sk.confusion_matrix(labels, predicted).tolist()
    precision, recall, f1, support = sk.precision_recall_fscore_support(
        labels, predicted, labels=range(classes), zero_division=0)
    np.testing.assert_allclose([r["precision"] for r in result["per_class"]], precision)
    np.testing.assert_allclose([r["recall"] for r in result["per_class"]], recall)
    np.testing.assert_allclose([r["f1"] for r in result["per_class"]], f1)
    assert [r["support"] for r in result["per_class"]] == support.tolist()
    for average in ("macro", "weighted"):
        expected = sk.precision_recall_fscore_support(labels, predicted, average=average,
                                                      zero_division=0)[:3]
        np.testing.assert_allclose(list(result[f"{average}_avg"].values()), expected)
    one_hot = np.eye(classes)[labels]
    calibration = result["calibration"]
    assert calibration["brier_score"] == pytest.approx(
        np.mean(np.sum((probabilities - one_hot) ** 2, axis=1)), rel=1e-12)
    # ECE over 15 equal-width bins, written out on the whole arrays
    confidence = probabilities.max(axis=1)
    bins = np.minimum((confidence * 15).astype(int), 14)
    ece = sum(abs(np.mean(predicted[bins == b] == labels[bins == b])
                  - np.mean(confidence[bins == b])) * np.mean(bins == b)
              for b in range(15) if np.any(bins == b))
    assert calibration["expected_calibration_error"] == pytest.approx(ece, rel=1e-9)
    # the gallery: the most confident mistakes, most confident first
    wrong = np.flatnonzero(predicted != labels)
    top = wrong[np.argsort(-confidence[wrong], kind="stable")[:5]]
    mistakes = sums.mistakes()
    assert [m["true"] for m in mistakes] == labels[top].tolist()
    np.testing.assert_allclose([m["confidence"] for m in mistakes], confidence[top], rtol=1e-6)


def test_streaming_memory_does_not_grow_with_the_data():
    def peak(batches):
        sums = StreamingMetrics(100, mistakes=8)
        tracemalloc.start()
        for labels, probabilities in random_batches(1, batches, 64, 100):
            sums.update(labels, probabilities, images=np.zeros((64, 16, 16, 3), np.float32))
        held = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return held, sums

    small, _ = peak(10)
    large, sums = peak(100)
    assert sums.count == 100 * 64 and len(sums.mistakes()) == 8
    # 10x the images, the same bounded state: a few batches' worth of scratch space, no more
    assert large < small * 1.5 + 1_000_000


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A run directory of a CifarResNet-8 trained for 2 epochs on digits (model.keras and the
    metrics.json naming its data), and its data."""
    keras.utils.set_random_seed(0)
    run_dir = tmp_path_factory.mktemp("runs") / "digits8"
    run_dir.mkdir()
    data = load_dataset("digits", batch_size=64, seed=0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255.0),
                              CifarResNet(depth=8, input_shape=(8, 8, 1), classes=10)],
                             name="digits8")
    compile_model(model, learning_rate=0.05, jit_compile=False)
    model.fit(data.train, epochs=2, verbose=0)
    model.save(run_dir / "model.keras")
    record = {"name": "digits8", "data": "digits",
              "config": {"data": "digits", "seed": 0, "batch_size": 64, "data_options": {}}}
    (run_dir / "metrics.json").write_text(json.dumps(record))
    return run_dir, model, data


@pytest.mark.slow
def test_top1_equals_model_evaluate_exactly_and_the_report_is_complete(digits_run):
    run_dir, model, data = digits_run
    expected = model.evaluate(data.test, verbose=0, return_dict=True)
    result = evaluate(str(run_dir), verbose=0)
    assert result["out_dir"] == os.path.join(str(run_dir), "evaluation")
    assert result["top1_accuracy"] == pytest.approx(float(expected["accuracy"]), abs=1e-7)
    assert round(result["top1_accuracy"] * result["images"]) == round(
        float(expected["accuracy"]) * data.test_size)
    assert result["images"] == data.test_size
    names = sorted(os.listdir(run_dir / "evaluation"))
    assert names == ["class_accuracy.png", "confusion_matrix.png", "error_gallery.png",
                     "metrics.json", "reliability.png", "report.html"]
    written = json.loads((run_dir / "evaluation" / "metrics.json").read_text())
    assert written["top1_accuracy"] == result["top1_accuracy"]
    assert len(written["confusion_matrix"]) == 10 and written["server"] is None
    page = (run_dir / "evaluation" / "report.html").read_text()
    assert page.count('src="data:image/png;base64,') == 4 and "http" not in page
    # a second evaluation replaces the first; nothing half-written stays behind
    evaluate(str(run_dir), split="validation", verbose=0)
    assert json.loads((run_dir / "evaluation" / "metrics.json").read_text())["split"] == \
        "validation"
    assert [n for n in os.listdir(run_dir) if n.startswith(".tmp-")] == []


def _truth(model, images, classes):
    """Grad-CAM from tf.GradientTape on a logits model: d score / d feature map."""
    pool = next(layer for layer in model.layers
                if isinstance(layer, keras.layers.GlobalAveragePooling2D))
    dense = next(layer for layer in model.layers if isinstance(layer, keras.layers.Dense))
    features = tf.convert_to_tensor(keras.Model(model.inputs[0], pool.input)(images))
    with tf.GradientTape() as tape:
        tape.watch(features)
        logits = dense(pool(features))  # the model's own head layers
        score = tf.reduce_sum(logits * tf.one_hot(classes, logits.shape[-1]))
    gradient = tape.gradient(score, features)
    weights = tf.reduce_mean(gradient, axis=(1, 2))
    cam = tf.nn.relu(tf.einsum("nhwk,nk->nhw", features, weights)).numpy()
    peak = cam.reshape(len(cam), -1).max(axis=1)[:, None, None]
    return np.divide(cam, peak, out=np.zeros_like(cam), where=peak > 0)


@pytest.mark.parametrize("options", [
    {"stage_depths": (1, 1)},
    {"stage_depths": (1, 1), "bottleneck": True, "expansion": 2},
    {"stage_depths": (3, 2), "loop_stages": True},
    {"stage_depths": (1, 2), "preact": True},
], ids=["basic", "bottleneck", "looped", "preact"])
def test_grad_cam_equals_gradient_tape(options):
    model = ResNet(widths=(8, 16), stem="cifar", input_shape=(16, 16, 3), classes=5,
                   classifier_activation=None, **options)
    images = np.random.default_rng(0).normal(size=(3, 16, 16, 3)).astype(np.float32)
    classes = np.array([0, 3, 4])
    head = split_head(model)
    assert head.activation == "linear"
    np.testing.assert_allclose(head.cam(images, classes), _truth(model, images, classes),
                               atol=1e-5)


@pytest.mark.parametrize("stage_models", [False, True])
def test_grad_cam_of_a_train_network_with_normalization_inside(stage_models):
    from keras_resnet import build_model

    data = load_dataset("digits", batch_size=8, augment=False)
    model = build_model("cifar-resnet20", data, stage_models=stage_models,
                        classifier_activation=None)
    images = next(iter(data.test))[0].numpy()
    classes = np.arange(8) % 10
    np.testing.assert_allclose(split_head(model).cam(images, classes),
                               _truth(model, images, classes), atol=1e-5)


@pytest.mark.slow
def test_grad_cam_through_normalization_and_nesting(digits_run):
    _, model, data = digits_run
    images = next(iter(data.test))[0].numpy()[:4]
    head = split_head(model)
    assert head.activation == "softmax"
    cams = head.cam(images, [1, 2, 3, 4])
    assert cams.shape == (4, 2, 2) and cams.max() <= 1.0 and cams.min() >= 0.0
    # the feature map the head sees, computed by the nested network itself
    inner = model.layers[-1]
    pool = inner.get_layer("avg_pool")
    features = keras.Model(inner.inputs, pool.input)(images / 255.0)
    np.testing.assert_allclose(head.features(images), features, atol=1e-5)


@pytest.mark.slow
def test_grad_cam_on_jax_matches_tensorflow(tmp_path):
    model = ResNet(widths=(8, 16), stem="cifar", input_shape=(16, 16, 3), classes=5,
                   stage_depths=(2, 2), loop_stages=True)
    model.save(tmp_path / "looped.keras")
    images = np.random.default_rng(1).normal(size=(2, 16, 16, 3)).astype(np.float32)
    np.save(tmp_path / "images.npy", images)
    script = textwrap.dedent(f"""
        import keras, numpy as np, sys
        import keras_resnet
        from keras_resnet.evaluation.grad_cam import split_head
        assert keras.backend.backend() == "jax"
        assert "tensorflow" not in sys.modules, "Grad-CAM must not need TensorFlow"
        model = keras.models.load_model({str(tmp_path / 'looped.keras')!r})
        cam = split_head(model).cam(np.load({str(tmp_path / 'images.npy')!r}), [1, 4])
        np.save({str(tmp_path / 'jax.npy')!r}, cam)
    """)
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = split_head(model).cam(images, [1, 4])
    np.testing.assert_allclose(np.load(tmp_path / "jax.npy"), expected, atol=1e-5)


@pytest.mark.parametrize("argv, message", [
    (["missing.keras", "--data", "digits"], "model 'missing.keras' does not exist"),
    (["model.txt", "--data", "digits"], "model must be a .keras file or a run directory"),
    (["MODEL", "--data", "digits", "--batch-size", "0"], "--batch-size must be a positive int"),
    (["MODEL", "--data", "digits", "--mistakes", "-1"], "--mistakes must be an int in [0, 256]"),
    (["MODEL"], "data is needed for"),
    (["MODEL", "--data", "digits", "--grpc", "127.0.0.1:1"], "--grpc and --served-model "
                                                             "need --server=URL"),
    (["MODEL", "--data", "nowhere"], "unknown data set 'nowhere'"),
])
def test_cli_bad_input_exits_2_with_one_line(argv, message, tmp_path, capsys):
    model = tmp_path / "m.keras"
    keras.Sequential([keras.Input((8, 8, 1)), keras.layers.GlobalAveragePooling2D(),
                      keras.layers.Dense(10, activation="softmax")]).save(model)
    (tmp_path / "model.txt").write_text("x")
    argv = [str(model) if a == "MODEL" else str(tmp_path / a) if a == "model.txt" else a
            for a in argv]
    if argv[0] == "missing.keras":
        os.chdir(tmp_path)
    assert main(["evaluate", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("keras-resnet evaluate: error: ") and "\n" not in err
    assert message in err
    assert not (tmp_path / "out").exists()


def test_bad_data_is_refused_before_the_model_loads(tmp_path):
    unreadable = tmp_path / "broken.keras"
    unreadable.write_text("not a zip archive")  # loading it would fail with another error
    with pytest.raises(ValueError, match="unknown data set 'nowhere': not one of digits"):
        evaluate(str(unreadable), "nowhere", out_dir=str(tmp_path / "out"))
    (tmp_path / "labels.txt").write_text("x")
    with pytest.raises(ValueError, match=r"data '.*labels.txt' is a file; pass 'digits'"):
        evaluate(str(unreadable), str(tmp_path / "labels.txt"), out_dir=str(tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_python_arguments_are_checked_before_loading():
    with pytest.raises(ValueError, match="split must be one of"):
        evaluate("x.keras", "digits", split="train")
    with pytest.raises(TypeError, match="model must be a .keras file, a run directory or a "
                                        "keras.Model; got 3"):
        evaluate(3, "digits")
    with pytest.raises(ValueError, match="out_dir is needed when model is a keras.Model"):
        evaluate(keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)]), "digits")


@pytest.mark.slow
def test_served_model_answers_what_the_local_one_does(digits_run, tmp_path):
    run_dir, model, _ = digits_run
    base = tmp_path / "saved_models"
    export_saved_model(model, base, name="digits8", warmup_batch_sizes=(1,))
    port, grpc_port = _free_port(), _free_port()
    log = open(tmp_path / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "keras_resnet", "serve", str(base),
                                "--port", str(port), "--grpc-port", str(grpc_port)],
                               stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait(f"http://127.0.0.1:{port}", process, tmp_path / "server.log")
        rest = evaluate(str(run_dir), out_dir=tmp_path / "rest", verbose=0,
                        server=f"http://127.0.0.1:{port}")
        grpc = evaluate(str(run_dir), out_dir=tmp_path / "grpc", verbose=0,
                        server=f"http://127.0.0.1:{port}", grpc=f"127.0.0.1:{grpc_port}")
        assert main(["evaluate", str(run_dir), "--out", str(tmp_path / "cli"), "--server",
                     f"http://127.0.0.1:{port}", "--served-model", "nope"]) == 2
    finally:
        process.terminate()
        process.wait(20)
        log.close()
    for result in (rest, grpc):
        assert result["server"]["images"] == result["images"]
        assert result["server"]["max_abs_difference"] < 1e-5


def _free_port():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait(url, process, log_path):
    from keras_resnet.serving import Client, ServingError

    client, deadline = Client(url), time.monotonic() + 180
    while True:
        try:
            client.status("digits8")
            return
        except ServingError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start:\n" + log_path.read_text())
            time.sleep(0.25)


@pytest.mark.slow
def test_train_evaluate_writes_the_report_into_the_run(tmp_path, capsys):
    assert main(["train", "--model", "cifar-resnet20", "--epochs", "1", "--no-export",
                 "--out", str(tmp_path), "--name", "quick", "--verbose", "0",
                 "--evaluate"]) == 0
    record = json.loads((tmp_path / "quick" / "metrics.json").read_text())
    report = json.loads((tmp_path / "quick" / "evaluation" / "metrics.json").read_text())
    assert report["data"] == "digits" and report["images"] == record["test_size"]
    assert report["top1_accuracy"] == pytest.approx(record["test_accuracy"], abs=1e-6)
    assert "quick/evaluation/report.html" in capsys.readouterr().out
