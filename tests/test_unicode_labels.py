"""Class names beyond ASCII (accents, spaces, emoji) end to end: the export's files and graph,
TensorFlow loading the SavedModel, `keras-resnet serve` over REST and gRPC, and
`keras-resnet predict`.

TF Serving writes a DT_STRING output whose name does not end in ``_bytes`` with RapidJSON's
``Writer::String`` (util/json_tensor.cc, AddSingleValueAndAdvance): the tensor's bytes as they
are, i.e. UTF-8 text in the JSON; gRPC carries the bytes in ``string_val``.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_resnet import ResNet, export_saved_model
from net_helpers import png, start_server, stop_server

NAMES = ["ñandú", "two words", "🐍 snake"]


def _model():
    keras.utils.set_random_seed(3)
    body = ResNet(stage_depths=(1, 1), widths=(8, 16), stem="cifar", input_shape=(8, 8, 1),
                  classes=3)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255.0), body],
                            name="birds")


def _top(probabilities, k=3):
    return [[NAMES[i] for i in np.argsort(-row, kind="stable")[:k]] for row in probabilities]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """An export with the non-ASCII names behind a `keras-resnet serve` subprocess."""
    model = _model()
    base = tmp_path_factory.mktemp("saved_models")
    path = export_saved_model(model, base, class_names=NAMES, top_k=3, warmup_batch_sizes=(1,))
    process, log, client = start_server(base, "birds")
    yield model, path, client
    stop_server(process, log)


def _pixels(seed, batch=2):
    return np.random.default_rng(seed).integers(0, 256, (batch, 8, 8)).astype(np.uint8)


def test_export_record_is_utf8_text(served):
    _, path, _ = served
    with open(os.path.join(path, "assets.extra", "keras_resnet_export.json"), "rb") as handle:
        raw = handle.read()
    assert "ñandú".encode("utf-8") in raw and "🐍 snake".encode("utf-8") in raw
    assert json.loads(raw.decode("utf-8"))["spec"]["class_names"] == NAMES


def test_saved_model_labels_are_utf8_bytes_in_tensorflow(served):
    model, path, _ = served
    loaded = tf.saved_model.load(path)
    pixels = _pixels(1)
    outputs = loaded.signatures["serving_default"](images=tf.constant(pixels[..., None]))
    assert outputs["labels"].dtype == tf.string
    labels = [[b.decode("utf-8") for b in row] for row in outputs["labels"].numpy()]
    assert labels == _top(model(pixels[..., None].astype("float32")).numpy())
    classify = loaded.signatures["classify"]
    from keras_resnet.export.signatures import image_examples

    got = classify(inputs=tf.constant(image_examples([png(p) for p in pixels])))["classes"]
    assert [[b.decode("utf-8") for b in row] for row in got.numpy()] == labels


def test_rest_answers_the_names_as_utf8_json_text(served):
    import http.client

    model, _, client = served
    pixels = _pixels(2)
    want = _top(model(pixels[..., None].astype("float32")).numpy())
    rows = client.predict("birds", instances=pixels[..., None])["predictions"]
    assert [row["labels"] for row in rows] == want
    # On the wire: UTF-8 text, not \u escapes (RapidJSON's Writer::String copies the bytes).
    host, port = client.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/v1/models/birds:predict",
                       body=json.dumps({"instances": pixels[..., None].tolist()}))
    response = connection.getresponse()
    raw = response.read()
    connection.close()
    assert response.status == 200
    for name in {name for row in want for name in row}:
        assert json.dumps(name, ensure_ascii=False).encode("utf-8") in raw
    assert json.loads(raw.decode("utf-8"))["predictions"][0]["labels"] == want[0]
    encoded = client.classify_images("birds", encoded=[png(p) for p in pixels])
    assert [row["labels"] for row in encoded["predictions"]] == want
    classified = client.classify("birds", encoded=[png(p) for p in pixels])
    assert [[label for label, _ in row] for row in classified] == want


def test_grpc_answers_utf8_bytes(served):
    model, _, client = served
    pixels = _pixels(3)
    want = _top(model(pixels[..., None].astype("float32")).numpy())
    outputs = client.grpc_predict("birds", {"images": pixels[..., None]})
    assert [[b.decode("utf-8") for b in row] for row in outputs["labels"]] == want


@pytest.mark.parametrize("grpc", [False, True])
def test_predict_cli_prints_the_names(served, tmp_path, capsys, grpc):
    from keras_resnet.cli import main

    model, _, client = served
    pixels = _pixels(4, batch=1)
    (tmp_path / "ñ.png").write_bytes(png(pixels[0]))
    extra = ["--grpc", client.grpc_target] if grpc else []
    assert main(["predict", "--server", client.url, "--model", "birds", *extra,
                 str(tmp_path / "ñ.png")]) == 0
    probabilities = model(pixels[..., None].astype("float32")).numpy()[0]
    top = np.argsort(-probabilities, kind="stable")
    assert capsys.readouterr().out.strip() == f"{tmp_path / 'ñ.png'}: " + ", ".join(
        f"{NAMES[i]} ({probabilities[i]:.3f})" for i in top)


def test_export_cli_reads_a_utf8_labels_file(tmp_path, capsys):
    from keras_resnet.cli import main

    model = _model()
    model.save(tmp_path / "birds.keras")
    (tmp_path / "labels.txt").write_bytes("\n".join(NAMES).encode("utf-8") + b"\n")
    assert main(["export", str(tmp_path / "birds.keras"), "--out", str(tmp_path / "out"),
                 "--labels", str(tmp_path / "labels.txt")]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    loaded = tf.saved_model.load(path)
    outputs = loaded.signatures["serving_default"](images=tf.zeros((1, 8, 8, 1), tf.uint8))
    assert {b.decode("utf-8") for b in outputs["labels"].numpy()[0]} == set(NAMES)


def test_verify_export_compares_the_utf8_labels(served):
    """The TensorFlow-only check reads the UTF-8 export record and compares the labels."""
    from keras_resnet import verify_export

    model, path, _ = served
    report = verify_export(path, verbose=False)
    assert report["max_abs_diff"] <= 1e-5
    assert {case["signature"] for case in report["cases"]} >= {"serving_default", "classify"}
