"""SavedModel export for TF Serving: versions, atomic publish, signatures, configs, warmup,
verification."""

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from PIL import Image
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.config import model_server_config_pb2

from keras_resnet import ResNet, export_saved_model, files, fold_batch_norm, verify_export
from keras_resnet.cli import main
from keras_resnet.export import ExportVerificationError, bundle, find_xla_attributes, versions

NAMES = ["cat", "dog", "bird"]


def small_model(name="tiny"):
    """Raw 0..255 pixels in (normalization inside, as trained models have), 3 classes out."""
    body = ResNet(stage_depths=(1, 1), widths=(8, 16), stem="cifar", input_shape=(8, 8, 1),
                  classes=3)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255.0), body],
                            name=name)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = small_model()
    base = tmp_path_factory.mktemp("saved_models")
    started = time.perf_counter()
    path = export_saved_model(model, base, class_names=NAMES, top_k=2)
    print(f"export: {time.perf_counter() - started:.2f} s")
    return model, str(base), path


def signature_defs(path):
    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        proto.ParseFromString(handle.read())
    return proto.meta_graphs[0].signature_def


def test_layout_and_no_overwrite(exported, tmp_path):
    model, base, path = exported
    assert path == os.path.join(base, "tiny", "1")
    assert sorted(os.listdir(path)) == ["assets", "assets.extra", "fingerprint.pb",
                                        "saved_model.pb", "variables"]
    assert not os.path.exists(os.path.join(base, bundle.STAGING))  # removed once empty
    for name in ("models.config", "batching_parameters.txt", "docker-run.sh",
                 "tiny.inferenceservice.yaml"):
        assert os.path.isfile(os.path.join(base, name))
    with pytest.raises(FileExistsError, match="version 1 of model 'tiny' already exists"):
        export_saved_model(model, base, version=1)
    # The next free version, and an explicit one; neither touches version 1.
    before = os.path.getmtime(os.path.join(path, "saved_model.pb"))
    second = export_saved_model(model, tmp_path, name="tiny", version=7)
    assert second == os.path.join(str(tmp_path), "tiny", "7")
    third = export_saved_model(model, tmp_path, name="tiny")
    assert third.endswith(os.path.join("tiny", "8")) and versions(tmp_path / "tiny") == [7, 8]
    assert os.path.getmtime(os.path.join(path, "saved_model.pb")) == before


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "../evil"}, "name must be"),
    ({"version": 0}, r"version must be a positive int \(1, 2, 64, ...\); got 0"),
    ({"input_dtype": "int8"}, "input_dtype must be one of 'uint8', 'float32'; got 'int8'"),
    ({"class_names": ["a", "b"]}, "class_names has 2 names but the model has 3 classes"),
    ({"top_k": 0}, r"top_k must be an int in \[1, 3\]; got 0"),
    ({"top_k": 4}, r"top_k must be an int in \[1, 3\]; got 4"),
    ({"warmup_batch_sizes": ()}, "warmup_batch_sizes must be a non-empty sequence"),
    ({"warmup_batch_sizes": (1, 32), "max_batch_size": 16},
     r"warmup_batch_sizes must be an int in \[1, 16\]; got 32"),
])
def test_bad_options_fail_before_writing(kwargs, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        export_saved_model(small_model(), tmp_path / "out", **kwargs)
    assert not (tmp_path / "out").exists()


def test_signatures_dtypes_and_no_xla(exported):
    _, _, path = exported
    defs = signature_defs(path)
    assert sorted(k for k in defs if not k.startswith("__")) == ["classify", "serving_bytes",
                                                                 "serving_default"]
    images = defs["serving_default"].inputs["images"]
    assert tf.dtypes.as_dtype(images.dtype) == tf.uint8
    assert [d.size for d in images.tensor_shape.dim] == [-1, 8, 8, 1]
    assert tf.dtypes.as_dtype(defs["serving_bytes"].inputs["image_bytes"].dtype) == tf.string
    for key in ("serving_default", "serving_bytes"):
        outputs = defs[key].outputs
        assert {k: tf.dtypes.as_dtype(v.dtype).name for k, v in outputs.items()} == {
            "probabilities": "float32", "scores": "float32", "classes": "int64",
            "labels": "string"}
        assert [d.size for d in outputs["scores"].tensor_shape.dim] == [-1, 2]
        assert defs[key].method_name == "tensorflow/serving/predict"
    # TF Serving's classification contract (classifier.cc: PreProcessClassification)
    classify = defs["classify"]
    assert list(classify.inputs) == ["inputs"]
    assert tf.dtypes.as_dtype(classify.inputs["inputs"].dtype) == tf.string
    assert {k: tf.dtypes.as_dtype(v.dtype).name for k, v in classify.outputs.items()} == {
        "classes": "string", "scores": "float32"}
    assert find_xla_attributes(path) == []


def test_xla_scan_finds_jit_compiled_functions(tmp_path):
    module = tf.Module()
    module.f = tf.function(lambda x: x * 2.0, jit_compile=True,
                           input_signature=[tf.TensorSpec([None], tf.float32)])
    tf.saved_model.save(module, str(tmp_path), signatures={"serving_default": module.f})
    assert any("_XlaMustCompile" in found for found in find_xla_attributes(str(tmp_path)))


def test_models_config_batching_and_deployment_files(exported):
    _, base, _ = exported
    with open(os.path.join(base, "models.config")) as handle:
        config = text_format.Parse(handle.read(), model_server_config_pb2.ModelServerConfig())
    (entry,) = config.model_config_list.config
    assert (entry.name, entry.base_path, entry.model_platform) == ("tiny", "/models/tiny",
                                                                   "tensorflow")
    assert entry.model_version_policy.latest.num_versions == 1
    with open(os.path.join(base, "batching_parameters.txt")) as handle:
        batching = handle.read()
    assert "max_batch_size { value: 64 }" in batching
    assert [int(line.split(":")[1]) for line in batching.splitlines()
            if line.startswith("allowed_batch_sizes")] == [8, 16, 32, 64]
    for field in ("batch_timeout_micros", "num_batch_threads", "max_enqueued_batches"):
        assert f"{field} {{ value: " in batching
    with open(os.path.join(base, "docker-run.sh")) as handle:
        docker = handle.read()
    for part in ("docker run --gpus all", "tensorflow/serving:latest-gpu",
                 "--model_config_file=/models/models.config", "--enable_batching=true",
                 "--batching_parameters_file=/models/batching_parameters.txt",
                 f"{os.path.abspath(base)}:/models"):
        assert part in docker
    with open(os.path.join(base, "tiny.inferenceservice.yaml")) as handle:
        manifest = handle.read()
    assert "kind: InferenceService" in manifest and 'nvidia.com/gpu: "1"' in manifest
    assert "--batching_parameters_file=/mnt/models/batching_parameters.txt" in manifest
    assert "/v1/models/tiny:predict" in manifest


def test_warmup_records_parse_as_prediction_logs(exported):
    _, _, path = exported
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
               tf.data.TFRecordDataset(os.path.join(path, bundle.WARMUP_FILE))]
    seen = []
    for log in records:
        if log.HasField("classify_log"):  # a ClassificationRequest of tf.Examples
            request = log.classify_log.request
            examples = request.input.example_list.examples
            assert all(e.features.feature["image/encoded"].bytes_list.value[0][:4] ==
                       b"\x89PNG" for e in examples)
            seen.append((request.model_spec.signature_name, "examples", len(examples)))
            continue
        request = log.predict_log.request
        assert request.model_spec.name == "tiny"
        (name, tensor), = request.inputs.items()
        seen.append((request.model_spec.signature_name, name, tensor.tensor_shape.dim[0].size))
    assert seen == [("serving_default", "images", 1), ("serving_default", "images", 8),
                    ("serving_default", "images", 32), ("serving_bytes", "image_bytes", 1),
                    ("serving_bytes", "image_bytes", 8), ("classify", "examples", 1),
                    ("classify", "examples", 8)]


@pytest.mark.slow
def test_verify_in_tensorflow_only_process(exported):
    _, _, path = exported
    report = verify_export(path)
    assert report["keras_imported"] is False
    assert report["signatures"] == ["classify", "serving_bytes", "serving_default"]
    assert len(report["cases"]) == 11 and report["max_abs_diff"] <= 1e-5
    table = report["table"]  # saved_model_cli show --all
    assert "signature_def['serving_default']:" in table
    assert "inputs['images'] tensor_info:\n        dtype: DT_UINT8\n        shape: (-1, 8, 8, 1)" \
        in table
    assert "Method name is: tensorflow/serving/predict" in table
    print(f"verify: {report['seconds']:.2f} s")


@pytest.mark.slow
def test_verify_catches_a_different_model(exported):
    _, _, path = exported
    keras.utils.set_random_seed(1)
    with pytest.raises(ExportVerificationError, match="differs|max \\|served - keras\\|"):
        verify_export(path, model=small_model(), verbose=False)


def test_bytes_signature_png_and_jpeg(exported):
    model, _, path = exported
    loaded = tf.saved_model.load(path)
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, (2, 8, 8)).astype(np.uint8)
    encoded = {}
    for fmt in ("PNG", "JPEG"):
        files = []
        for image in pixels:
            buffer = io.BytesIO()
            Image.fromarray(image, mode="L").save(buffer, format=fmt)
            files.append(buffer.getvalue())
        encoded[fmt] = files
    png = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded["PNG"]))
    expected = model(pixels[..., None].astype("float32")).numpy()
    np.testing.assert_allclose(png["probabilities"].numpy(), expected, atol=1e-5)
    assert png["probabilities"].dtype == tf.float32
    assert [[b.decode() for b in row] for row in png["labels"].numpy()] == [
        [NAMES[i] for i in np.argsort(-row)[:2]] for row in expected]
    jpeg = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encoded["JPEG"]))
    decoded = np.stack([np.asarray(Image.open(io.BytesIO(b))) for b in encoded["JPEG"]])
    np.testing.assert_allclose(jpeg["probabilities"].numpy(),
                               model(decoded[..., None].astype("float32")).numpy(), atol=1e-3)


def graph_op_types(path):
    """Every op type in the saved graph and its functions (what TF Serving loads)."""
    graph = saved_model_pb2.SavedModel()
    with open(os.path.join(path, "saved_model.pb"), "rb") as handle:
        graph.ParseFromString(handle.read())
    meta = graph.meta_graphs[0].graph_def
    nodes = list(meta.node) + [n for f in meta.library.function for n in f.node_def]
    return {node.op for node in nodes}


def test_float32_outputs_under_mixed_bfloat16_with_resize(tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = small_model("bf16")
    path = export_saved_model(model, tmp_path, input_dtype="float32", resize=True,
                              warmup_batch_sizes=(1,))
    defs = signature_defs(path)
    images_info = defs["serving_default"].inputs["images"]
    assert tf.dtypes.as_dtype(images_info.dtype) == tf.float32
    assert [d.size for d in images_info.tensor_shape.dim] == [-1, -1, -1, 1]
    assert {k: tf.dtypes.as_dtype(v.dtype).name for k, v in defs["serving_default"].outputs.items()
            } == {"probabilities": "float32", "scores": "float32", "classes": "int64"}
    images = np.random.default_rng(0).integers(0, 256, (4, 10, 12, 1)).astype("float32")
    served = tf.saved_model.load(path).signatures["serving_default"](images=images)
    assert served["probabilities"].dtype == tf.float32
    resized = tf.image.resize(images, (8, 8))
    # A bfloat16 model is served with its BN folded into the convolutions (TensorFlow fuses
    # them itself only in float32): exact against the folded copy run as a graph (the served
    # graph's fused convolution + bias rounds to bfloat16 once), bfloat16-close to the model.
    folded_model = fold_batch_norm(model, weights_in_compute_dtype=True)
    folded = tf.function(lambda x: folded_model(x, training=False))
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               np.asarray(folded(resized), dtype="float32"), atol=1e-5)
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               np.asarray(model(resized), dtype="float32"), atol=1e-2)
    assert served["scores"].numpy().max() > 0.34  # softmax output, not a uniform 1/3
    assert not {op for op in graph_op_types(path) if "BatchNorm" in op}
    with open(os.path.join(path, bundle.EXPORT_INFO)) as handle:
        assert json.load(handle)["batch_norm_folded"] is True
    assert verify_export(path, model=model, verbose=False)["max_abs_diff"] <= 1e-5


def test_fold_batch_norm_option(tmp_path):
    keras.config.set_dtype_policy("mixed_bfloat16")
    model = small_model("bf16")
    kept = export_saved_model(model, tmp_path, fold_batch_norm=False, warmup_batch_sizes=(1,))
    assert "FusedBatchNormV3" in graph_op_types(kept)
    keras.config.set_dtype_policy("float32")
    plain = small_model("fp32")
    assert "FusedBatchNormV3" in graph_op_types(
        export_saved_model(plain, tmp_path, fold_batch_norm=False, warmup_batch_sizes=(1,)))
    forced = export_saved_model(plain, tmp_path, warmup_batch_sizes=(1,))
    assert not {op for op in graph_op_types(forced) if "BatchNorm" in op}
    images = np.random.default_rng(1).integers(0, 256, (3, 8, 8, 1)).astype("uint8")
    served = tf.saved_model.load(forced).signatures["serving_default"](images=images)
    np.testing.assert_allclose(served["probabilities"].numpy(),
                               plain(images.astype("float32")).numpy(), atol=1e-5)
    for bad in ("yes", 1):
        with pytest.raises(TypeError, match=r"fold_batch_norm must be True, False or None.*"
                                            + repr(bad)):
            export_saved_model(plain, tmp_path / "bad", fold_batch_norm=bad)
    assert not (tmp_path / "bad").exists()  # refused before anything was written


SIGKILL_CHILD = textwrap.dedent("""
    import sys
    import keras
    from keras_resnet import ResNet, export_saved_model
    model = ResNet(stage_depths=(1, 1), widths=(8, 16), stem="cifar", input_shape=(8, 8, 1),
                   classes=3, name="victim")
    print("ready", flush=True)
    export_saved_model(model, sys.argv[1])
""")


@pytest.mark.slow
def test_sigkill_mid_export_leaves_nothing_loadable(tmp_path):
    base = tmp_path / "saved_models"
    child = subprocess.Popen([sys.executable, "-c", SIGKILL_CHILD, str(base)],
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert child.stdout.readline().strip() == "ready"
        staging = base / bundle.STAGING
        deadline = time.monotonic() + 120
        # Kill as soon as the version is being written (its variables exist in staging).
        while time.monotonic() < deadline:
            if staging.is_dir() and any((d / "variables").is_dir() for d in staging.iterdir()):
                break
            time.sleep(0.002)
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
    assert child.returncode == -signal.SIGKILL
    leftovers = list(staging.iterdir())
    assert len(leftovers) == 1  # the half-written version, outside any model's base path
    assert not (base / "victim").exists() or versions(base / "victim") == []
    assert bundle.model_names(base) == [] and not (base / "models.config").exists()
    files.remove_stale_temporaries(str(staging))  # what the next export does first
    assert list(staging.iterdir()) == []


@pytest.mark.slow
def test_cli_export_with_labels_and_verify(tmp_path, capsys):
    model = small_model("clinet")
    model.save(tmp_path / "m.keras")
    (tmp_path / "labels.txt").write_text("\n".join(NAMES) + "\n")
    status = main(["export", str(tmp_path / "m.keras"), "--out", str(tmp_path / "out"),
                   "--labels", str(tmp_path / "labels.txt"), "--top-k", "3", "--verify"])
    out = capsys.readouterr().out
    assert status == 0
    assert out.strip().splitlines()[-1] == str(tmp_path / "out" / "clinet" / "1")
    assert "max |served - keras| = " in out and "labels" in out
    assert main(["export", str(tmp_path / "m.keras"), "--out", str(tmp_path / "out"),
                 "--version", "1"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_staging_is_removed_when_empty_but_not_under_a_writer(exported, tmp_path):
    """The .staging root goes once no export writes there; a failed export leaves nothing, and a
    concurrent writer's version in it is kept (rmdir refuses a non-empty directory)."""
    model, _, _ = exported
    export_saved_model(model, tmp_path, warmup_batch_sizes=(1,))
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["tiny", "models.config", "batching_parameters.txt", "docker-run.sh",
         "tiny.inferenceservice.yaml"])
    with pytest.raises(ValueError, match="top_k"):  # checked before staging exists
        export_saved_model(model, tmp_path, top_k=9)
    with pytest.raises(FileExistsError, match="version 1 of model 'tiny' already exists"):
        export_saved_model(model, tmp_path, version=1)
    assert not (tmp_path / bundle.STAGING).exists()
    writing = tmp_path / bundle.STAGING / f"{files.TEMP_PREFIX}{os.getppid()}-other-x"
    writing.mkdir(parents=True)  # another live process's version being written
    export_saved_model(model, tmp_path, warmup_batch_sizes=(1,))
    assert os.listdir(tmp_path / bundle.STAGING) == [writing.name]
    assert versions(tmp_path / "tiny") == [1, 2]


CONCURRENT_CHILD = textwrap.dedent("""
    import sys
    import keras
    from keras_resnet import ResNet, export_saved_model
    model = ResNet(stage_depths=(1, 1), widths=(8, 16), stem="cifar", input_shape=(8, 8, 1),
                   classes=3, name="shared")
    for _ in range(3):
        export_saved_model(model, sys.argv[1], warmup_batch_sizes=(1,))
""")


@pytest.mark.slow
def test_concurrent_exports_share_and_then_remove_staging(tmp_path):
    """Two processes export into one bundle at once: one may remove the empty .staging while
    the other is about to write there; every export still lands, each as its own version."""
    children = [subprocess.Popen([sys.executable, "-c", CONCURRENT_CHILD, str(tmp_path)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for _ in range(2)]
    errors = [child.communicate(timeout=600)[1] for child in children]
    assert [child.returncode for child in children] == [0, 0], errors
    assert versions(tmp_path / "shared") == [1, 2, 3, 4, 5, 6]
    assert not (tmp_path / bundle.STAGING).exists()


def test_failed_write_removes_its_staging(exported, tmp_path):
    model, _, _ = exported
    (tmp_path / "tiny").write_text("a file where the model directory goes")
    with pytest.raises(FileExistsError):
        export_saved_model(model, tmp_path, warmup_batch_sizes=(1,))
    assert not (tmp_path / bundle.STAGING).exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
def test_base_dir_that_cannot_be_created_is_one_line_before_work(exported, tmp_path, capsys):
    """/proc passes a permission check (for root) but refuses mkdir: the directory is made,
    not judged, before the export's (and the CLI's model loading) work."""
    model, _, _ = exported
    with pytest.raises(ValueError, match=r"^base_dir '/proc/keras-resnet-x' cannot be created: "
                                         r"No such file or directory$"):
        export_saved_model(model, "/proc/keras-resnet-x")
    assert main(["export", str(tmp_path / "missing.keras"), "--out", "/proc/keras-resnet-x"]) == 2
    assert capsys.readouterr().err == ("keras-resnet export: error: --out '/proc/keras-resnet-x' "
                                       "cannot be created: No such file or directory\n")
    assert main(["export", str(tmp_path / "missing.keras"), "--out",
                 str(tmp_path / "new" / "out")]) == 2  # made, then the model is looked at
    assert "missing.keras" in capsys.readouterr().err and (tmp_path / "new" / "out").is_dir()


def dead_pid():
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_next_export_removes_temporaries_of_dead_writers(exported, tmp_path):
    model, _, _ = exported
    export_saved_model(model, tmp_path, warmup_batch_sizes=(1,))
    # What a SIGKILL right after a config file's rename leaves: a temporary beside it.
    stale = tmp_path / f"{files.TEMP_PREFIX}{dead_pid()}-models.config"
    stale.write_text("model_config_list {")
    stale_staging = tmp_path / bundle.STAGING / f"{files.TEMP_PREFIX}{dead_pid()}-tiny-x"
    (stale_staging / "variables").mkdir(parents=True)
    live = tmp_path / f"{files.TEMP_PREFIX}{os.getppid()}-models.config"  # a writer still alive
    live.write_text("")
    export_saved_model(model, tmp_path, warmup_batch_sizes=(1,))
    assert not stale.exists() and not stale_staging.exists() and live.exists()
    assert versions(tmp_path / "tiny") == [1, 2]
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp-")) == [live.name]


def test_default_warmup_fits_max_batch_size(exported, tmp_path):
    model, _, _ = exported
    path = export_saved_model(model, tmp_path, max_batch_size=16)
    from keras_resnet.export.verify import warmup_inputs_of

    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in
            tf.data.TFRecordDataset(os.path.join(path, bundle.WARMUP_FILE))]
    sizes = [(getattr(log, log.WhichOneof("log_type")).request.model_spec.signature_name,
              len(warmup_inputs_of(log))) for log in logs]
    assert sizes == [("serving_default", 1), ("serving_default", 8), ("serving_bytes", 1),
                     ("serving_bytes", 8), ("classify", 1), ("classify", 8)]
    with open(os.path.join(tmp_path, "batching_parameters.txt")) as handle:
        assert "max_batch_size { value: 16 }" in handle.read()


def test_graph_checks_the_image_shape_as_tf_serving_feeds_it(exported):
    """TF Serving feeds a request's tensor by name whatever its shape: the graph must refuse."""
    _, _, path = exported
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
        fed = tf.compat.v1.placeholder(tf.uint8, shape=None)  # no Python-side shape check
        meta = tf.compat.v1.saved_model.loader.load(
            session, ["serve"], path, input_map={"serving_default_images:0": fed})
        fetches = {k: v.name for k, v in meta.signature_def["serving_default"].outputs.items()}
        good = session.run(fetches, {fed: np.zeros((2, 8, 8, 1), np.uint8)})
        assert good["probabilities"].shape == (2, 3)
        for shape in ((2, 8, 4, 1), (2, 8, 8, 3), (8, 8, 1)):
            with pytest.raises(tf.errors.InvalidArgumentError,
                               match=r"images must have shape \[batch, 8, 8, 1\]; got shape"):
                session.run(fetches, {fed: np.zeros(shape, np.uint8)})


@pytest.fixture(scope="module")
def saved_keras_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keras") / "m.keras"
    small_model("clinet").save(path)
    return path


@pytest.mark.parametrize("case, message", [
    ("out_is_file", "--out must be a directory; got '{out}', which is a file"),
    ("truncated", "is not a readable .keras file (not a zip archive: truncated or corrupt?)"),
    ("garbage", "is not a readable .keras file (not a zip archive: truncated or corrupt?)"),
    ("top_k", "--top-k must be an int in [1, 3]; got 100"),
])
def test_cli_export_bad_input_is_one_line_exit_2(case, message, saved_keras_file, tmp_path,
                                                 capsys):
    model_file, out, extra = str(saved_keras_file), tmp_path / "out", []
    if case == "out_is_file":
        out.write_text("not a directory")
    elif case == "truncated":
        model_file = str(tmp_path / "t.keras")
        (tmp_path / "t.keras").write_bytes(saved_keras_file.read_bytes()[:3000])
    elif case == "garbage":
        model_file = str(tmp_path / "g.keras")
        (tmp_path / "g.keras").write_text("garbage")
    else:
        extra = ["--top-k", "100"]
    assert main(["export", model_file, "--out", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-resnet export: error: ")
    assert message.format(out=out) in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err and "File not found" not in err


def test_version_labels_land_in_models_config(exported, tmp_path):
    model, _, _ = exported

    def config():
        with open(tmp_path / "models.config") as handle:
            (entry,) = text_format.Parse(handle.read(), model_server_config_pb2.ModelServerConfig()
                                         ).model_config_list.config
        return dict(entry.version_labels), list(entry.model_version_policy.specific.versions)

    for labels in (("stable",), ("canary",), ()):
        export_saved_model(model, tmp_path, warmup_batch_sizes=(1,), version_labels=labels)
    # TF Serving lets a label name only a loaded version: the policy lists them and the newest
    assert config() == ({"stable": 1, "canary": 2}, [1, 2, 3])
    export_saved_model(model, tmp_path, warmup_batch_sizes=(1,), version_labels=("stable",))
    assert config() == ({"stable": 4, "canary": 2}, [2, 4])
    with pytest.raises(TypeError, match=r"version_labels must be a sequence of labels"):
        export_saved_model(model, tmp_path, version_labels="stable")
    with pytest.raises(ValueError, match=r"version_labels must be 1-128 letters"):
        export_saved_model(model, tmp_path, version_labels=("no/slash",))


def test_classify_signature_takes_tf_examples(exported):
    """TF Serving's classification contract: serialized tf.Examples in, names and scores out."""
    from keras_resnet.export.signatures import image_examples

    model, _, path = exported
    pixels = np.random.default_rng(11).integers(0, 256, (3, 8, 8)).astype(np.uint8)
    encoded = [tf.io.encode_png(p[..., None]).numpy() for p in pixels]
    served = tf.saved_model.load(path).signatures["classify"](
        inputs=tf.constant(list(image_examples(encoded))))
    expected = model(pixels[..., None].astype("float32")).numpy()
    top = np.argsort(-expected, axis=-1)[:, :2]
    assert [[c.decode() for c in row] for row in served["classes"].numpy()] == [
        [NAMES[i] for i in row] for row in top]
    np.testing.assert_allclose(served["scores"].numpy(),
                               np.take_along_axis(expected, top, axis=-1), atol=1e-5)


@pytest.mark.slow
def test_served_bytes_prediction_equals_evaluate_on_the_same_file(tmp_path):
    """serving_bytes applies the training data's own evaluation preprocessing (the 0.875
    center crop of the Inception recipe, antialiased resize): served == evaluated, per file."""
    from imagefolders import make_jpeg_folder

    from keras_resnet import load_dataset, train
    from keras_resnet.data import folders

    root = make_jpeg_folder(str(tmp_path / "pets"), classes=2, per_class=10, size=(48, 40))
    options = {"image_size": (32, 32), "crop": "inception"}
    # a tiny learning rate keeps the probabilities away from 0 and 1, where crops would not show
    result = train("cifar-resnet20", root, epochs=1, batch_size=4, learning_rate=1e-5,
                   out_dir=str(tmp_path / "runs"), export_dir=str(tmp_path / "sm"), verbose=0,
                   data_options=options)
    data = load_dataset(root, batch_size=4, seed=0, **options)
    assert data.crop_fraction == 0.875
    expected = result.model.predict(data.test, verbose=0)

    _, paths, _ = folders.list_images(root)
    _, _, test_index = folders.split_indices(20, 0, folders.holdout_sizes(20, 0.1, 0.2))
    encoded = tf.constant([open(paths[i], "rb").read() for i in test_index])
    served = tf.saved_model.load(result.export_path).signatures["serving_bytes"]
    probabilities = served(image_bytes=encoded)["probabilities"].numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)

    # The same file without the crop is another input: the check above can fail.
    whole = export_saved_model(result.model, str(tmp_path / "sm"), name="whole",
                               class_names=list(data.class_names), crop_fraction=1.0)
    uncropped = tf.saved_model.load(whole).signatures["serving_bytes"](image_bytes=encoded)
    assert np.abs(uncropped["probabilities"].numpy() - expected).max() > 1e-4
