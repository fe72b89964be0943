"""The client against a real `keras-resnet serve` subprocess (KServe) over HTTP and gRPC."""

import concurrent.futures
import io
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from PIL import Image

pytest.importorskip("kserve")

from keras_resnet import ResNet, export_saved_model  # noqa: E402
from keras_resnet.cli import main  # noqa: E402
from keras_resnet.serving import Client, ServingError  # noqa: E402

NAMES = ["cat", "dog", "bird"]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def small_model():
    body = ResNet(stage_depths=(1, 1), widths=(8, 16), stem="cifar", input_shape=(8, 8, 1),
                  classes=3)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255.0), body],
                            name="pets")


def png(pixels):
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = small_model()
    base = tmp_path_factory.mktemp("saved_models")
    export_saved_model(model, base, class_names=NAMES, top_k=2, warmup_batch_sizes=(1,))
    port, grpc_port = free_port(), free_port()
    log = open(base / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_resnet", "serve", str(base), "--port", str(port),
         "--grpc-port", str(grpc_port), "--poll-seconds", "0.5", "--max-body-mb", "1"],
        stdout=log, stderr=subprocess.STDOUT)
    client = Client(f"http://127.0.0.1:{port}", grpc_target=f"127.0.0.1:{grpc_port}")
    deadline = time.monotonic() + 180
    while True:
        try:
            client.status("pets")
            break
        except ServingError:
            if process.poll() is not None or time.monotonic() > deadline:
                log.close()
                raise RuntimeError("server did not start:\n" + (base / "server.log").read_text())
            time.sleep(0.25)
    yield model, base, client
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()


def expected(model, pixels):
    return model(pixels[..., None].astype("float32")).numpy()


def test_predict_uint8_instances_and_inputs_forms(server):
    model, _, client = server
    pixels = np.random.default_rng(1).integers(0, 256, (3, 8, 8)).astype(np.uint8)
    rows = client.predict("pets", instances=pixels[..., None])["predictions"]
    want = expected(model, pixels)
    assert len(rows) == 3 and set(rows[0]) == {"probabilities", "scores", "classes", "labels"}
    np.testing.assert_allclose([r["probabilities"] for r in rows], want, atol=1e-5)
    assert [r["labels"] for r in rows] == [[NAMES[i] for i in np.argsort(-p)[:2]] for p in want]
    columns = client.predict("pets", inputs={"images": pixels[..., None]})["outputs"]
    np.testing.assert_allclose(columns["probabilities"], want, atol=1e-5)
    assert columns["classes"] == [r["classes"] for r in rows]


def test_b64_png_through_the_bytes_signature(server):
    model, _, client = server
    pixels = np.random.default_rng(2).integers(0, 256, (2, 8, 8)).astype(np.uint8)
    rows = client.classify_images("pets", encoded=[png(p) for p in pixels])
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected(model, pixels),
                               atol=1e-5)


def test_status_and_metadata_have_tf_serving_shape(server):
    _, _, client = server
    assert client.status("pets")["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK",
                                                          "error_message": ""}}]
    metadata = client.metadata("pets")
    assert metadata["model_spec"] == {"name": "pets", "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == ["serving_bytes", "serving_default"]
    assert signatures["serving_default"]["inputs"]["images"]["dtype"] == "DT_UINT8"


def test_32_concurrent_clients_no_errors(server):
    model, _, client = server
    pixels = np.random.default_rng(3).integers(0, 256, (2, 8, 8)).astype(np.uint8)
    want = expected(model, pixels)
    per_client = 5

    def worker(_):
        own = Client(client.url)
        for _ in range(per_client):
            rows = own.predict("pets", instances=pixels[..., None])["predictions"]
            np.testing.assert_allclose([r["probabilities"] for r in rows], want, atol=1e-5)
        return per_client

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        done = sum(pool.map(worker, range(32)))
    seconds = time.perf_counter() - started
    assert done == 32 * per_client
    print(f"{done} requests from 32 clients in {seconds:.2f} s: {done / seconds:.0f} req/s")


@pytest.mark.parametrize("model_name, kwargs, status, message", [
    ("pets", {"instances": np.zeros((2, 8, 4, 1), np.uint8)}, 400,
     "must have shape [batch, 8, 8, 1]; got [2, 8, 4, 1]"),
    ("pets", {"instances": [[["x"] * 8] * 8]}, 400, "must be numbers (uint8)"),
    ("pets", {"instances": np.full((1, 8, 8, 1), 0.5)}, 400, "fractional values"),
    ("pets", {"instances": np.full((1, 8, 8, 1), 300)}, 400, "values must be 0..255"),
    ("pets", {"instances": np.zeros((1, 8, 8, 1)), "signature_name": "nope"}, 400,
     "no signature 'nope'"),
    ("unknown", {"instances": np.zeros((1, 8, 8, 1), np.uint8)}, 404, "unknown does not exist"),
    ("../pets", {"instances": np.zeros((1, 8, 8, 1), np.uint8)}, 400, "invalid model name"),
    ("pets", {"instances": np.zeros((5000, 8, 8, 1), np.uint8)}, 413, "larger than the limit"),
    ("pets", {"instances": np.zeros((1, 8, 8, 1), np.uint8), "version": 9}, 404,
     "version 9 is not loaded"),
])
def test_bad_requests_get_4xx_and_server_stays_healthy(server, model_name, kwargs, status,
                                                       message):
    _, _, client = server
    with pytest.raises(ServingError) as caught:
        client.predict(model_name, **kwargs)
    assert caught.value.status == status and message in caught.value.message
    assert client.status("pets")["model_version_status"][0]["state"] == "AVAILABLE"


def test_grpc_predict_against_prediction_service(server):
    model, _, client = server
    pixels = np.random.default_rng(4).integers(0, 256, (2, 8, 8)).astype(np.uint8)
    request = Client.predict_request("pets", {"images": pixels[..., None]}, version=1)
    assert (request.model_spec.name, request.model_spec.version.value) == ("pets", 1)
    assert request.inputs["images"].dtype == 4  # DT_UINT8
    assert [d.size for d in request.inputs["images"].tensor_shape.dim] == [2, 8, 8, 1]
    outputs = client.grpc_predict("pets", {"images": pixels[..., None]})
    np.testing.assert_allclose(outputs["probabilities"], expected(model, pixels), atol=1e-5)
    assert outputs["labels"].shape == (2, 2)
    with pytest.raises(ServingError, match="NOT_FOUND"):
        client.grpc_predict("nope", {"images": pixels[..., None]})
    with pytest.raises(ServingError, match="INVALID_ARGUMENT: input 'images' must have shape"):
        client.grpc_predict("pets", {"images": pixels})


def test_predict_cli_prints_top_labels(server, tmp_path, capsys):
    model, _, client = server
    pixels = np.random.default_rng(5).integers(0, 256, (8, 8)).astype(np.uint8)
    (tmp_path / "a.png").write_bytes(png(pixels))
    assert main(["predict", "--server", client.url, "--model", "pets",
                 str(tmp_path / "a.png")]) == 0
    probabilities = expected(model, pixels[None])[0]
    top = np.argsort(-probabilities)[:2]
    assert capsys.readouterr().out.strip() == (
        f"{tmp_path / 'a.png'}: " + ", ".join(f"{NAMES[i]} ({probabilities[i]:.3f})" for i in top))


def test_new_version_is_served_without_restart(server):
    model, base, client = server
    export_saved_model(model, base, name="pets", class_names=NAMES[::-1], top_k=1,
                       warmup_batch_sizes=(1,))
    deadline = time.monotonic() + 60
    while client.status("pets")["model_version_status"][0]["version"] != "2":
        assert time.monotonic() < deadline, "version 2 was not picked up"
        time.sleep(0.25)
    rows = client.predict("pets", instances=np.zeros((1, 8, 8, 1), np.uint8))["predictions"]
    assert len(rows[0]["labels"]) == 1 and rows[0]["labels"][0] in NAMES


def test_client_validates_arguments():
    with pytest.raises(ValueError, match="url must be an http"):
        Client("127.0.0.1:8501")
    with pytest.raises(ValueError, match="grpc_target must be 'host:port'"):
        Client("http://x", grpc_target="x")
    with pytest.raises(ValueError, match="exactly one of instances"):
        Client("http://x").predict("m")
    with pytest.raises(ValueError, match="version must be an int >= 1"):
        Client("http://x").predict("m", instances=[1], version=0)
    with pytest.raises(ServingError, match="cannot reach"):
        Client(f"http://127.0.0.1:{free_port()}", timeout=5).status("m")
