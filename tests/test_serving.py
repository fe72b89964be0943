"""`keras-resnet serve` and `Client` against a real server process on 127.0.0.1, REST and gRPC.

Each expected answer is TF Serving's, from its source: status codes from
model_servers/http_server.cc (ToHTTPStatusCode), routes and "Malformed request" from
http_rest_api_util.cc / http_rest_api_handler.cc, JSON rules and messages from util/json_tensor.cc,
gRPC input checks from servables/tensorflow/predict_util.cc, the batch limit's message from TF's
batch scheduler (shared_batch_scheduler.h), and TF's own dtype check ("Expects arg[0] ...").
"""

import base64
import concurrent.futures
import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time

import grpc
import keras
import numpy as np
import pytest
from tensorflow_serving.apis import prediction_service_pb2_grpc

from keras_resnet import ResNet, export_saved_model
from keras_resnet.cli import main
from keras_resnet.serving import Client, ServingError
from net_helpers import png, start_server, stop_server

NAMES = ["cat", "dog", "bird"]
MAX_BATCH = 4


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def small_model(seed=0):
    keras.utils.set_random_seed(seed)
    body = ResNet(stage_depths=(1, 1), widths=(8, 16), stem="cifar", input_shape=(8, 8, 1),
                  classes=3)
    return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Rescaling(1 / 255.0), body],
                            name="pets")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    model = small_model()
    base = tmp_path_factory.mktemp("saved_models")
    export_saved_model(model, base, class_names=NAMES, top_k=2, warmup_batch_sizes=(1,),
                       max_batch_size=MAX_BATCH)
    export_saved_model(model, base, name="floaty", input_dtype="float32", top_k=2,
                       warmup_batch_sizes=(1,), max_batch_size=MAX_BATCH)
    process, log, client = start_server(base, "pets", "--max-body-mb", "1")
    yield model, base, client
    stop_server(process, log)


def expected(model, pixels):
    return model(pixels[..., None].astype("float32")).numpy()


def raw(client, method, path, body=None):
    """One raw HTTP request: (status, decoded JSON or text)."""
    host, port = client.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    data = body if body is None or isinstance(body, bytes) else json.dumps(body).encode()
    connection.request(method, path, body=data)
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    try:
        return response.status, json.loads(text)
    except ValueError:
        return response.status, text


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


def test_floats_are_written_as_tf_serving_writes_float32(server):
    """json_tensor.cc's WriteDecimal: %g (six digits) if it reads back as the float, else %.9g."""
    _, _, client = server
    status, body = raw(client, "POST", "/v1/models/pets:predict",
                       {"instances": np.zeros((1, 8, 8, 1), int).tolist()})
    assert status == 200
    for value in body["predictions"][0]["probabilities"]:
        single = np.float32(value)
        six = "%g" % single
        text = six if np.float32(six) == single else "%.9g" % single
        assert value == float(text)
    from keras_resnet.serving.json_text import decimal_text

    assert [decimal_text(np.float32(v), float32=True) for v in (1 / 3, 0.25, 3, 1e6, 1e-5)] == [
        "0.333333343", "0.25", "3.0", "1e+06", "1e-05"]


def test_b64_png_through_the_bytes_signature(server):
    model, _, client = server
    pixels = np.random.default_rng(2).integers(0, 256, (2, 8, 8)).astype(np.uint8)
    rows = client.classify_images("pets", encoded=[png(p) for p in pixels])["predictions"]
    np.testing.assert_allclose([r["probabilities"] for r in rows], expected(model, pixels),
                               atol=1e-5)


def test_status_and_metadata_have_tf_serving_shape(server):
    _, _, client = server
    assert client.status("pets") == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK",
                                                          "error_message": ""}}]}
    metadata = client.metadata("pets")
    assert metadata["model_spec"] == {"name": "pets", "signature_name": "", "version": "1"}
    signatures = metadata["metadata"]["signature_def"]["signature_def"]
    # get_model_metadata_impl.cc copies every SignatureDef, the init op's included
    assert sorted(signatures) == ["__saved_model_init_op", "classify", "serving_bytes",
                                  "serving_default"]
    images = signatures["serving_default"]["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8"
    # ToJsonString's always_print_fields_with_no_presence: defaults are written too
    assert images["tensor_shape"]["unknown_rank"] is False
    assert signatures["serving_default"]["defaults"] == {}


def test_client_casts_to_the_signature_dtype(server):
    """float64 pixels work through the Client on REST and gRPC, as they will on TF Serving."""
    model, _, client = server
    pixels = np.random.default_rng(6).integers(0, 256, (2, 8, 8)).astype(np.float64)
    want = expected(model, pixels)
    rows = client.predict("pets", instances=pixels[..., None])["predictions"]
    np.testing.assert_allclose([r["probabilities"] for r in rows], want, atol=1e-5)
    outputs = client.grpc_predict("pets", {"images": pixels[..., None]})
    np.testing.assert_allclose(outputs["probabilities"], want, atol=1e-5)
    with pytest.raises(ValueError, match=r"'images' is uint8 in the model's signature: values "
                                         r"must be integers in \[0, 255\]; got values in "
                                         r"\[0.5, 0.5\] with fractions"):
        client.predict("pets", instances=np.full((1, 8, 8, 1), 0.5))
    with pytest.raises(ValueError, match=r"got values in \[300, 300\]"):
        client.grpc_predict("pets", {"images": np.full((1, 8, 8, 1), 300)})


ZEROS = np.zeros((1, 8, 8, 1), int).tolist()


@pytest.mark.parametrize("method, path, body, status, message", [
    # json_tensor.cc: a uint8 input takes JSON integers only
    ("POST", "/v1/models/pets:predict", {"instances": [[[[3.0]] * 8] * 8]}, 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: JSON Value: "
     "3.0 Type: Number is not of expected type: uint8"),
    ("POST", "/v1/models/pets:predict", {"inputs": [[[[True]] * 8] * 8]}, 400,
     "JSON Value: true Type: True is not of expected type: uint8"),
    ("POST", "/v1/models/pets:predict", {"instances": [[[["x"]] * 8] * 8]}, 400,
     'JSON Value: "x" Type: String is not of expected type: uint8'),
    ("POST", "/v1/models/pets:predict",
     {"instances": [np.zeros((8, 8, 1), int).tolist(), np.zeros((8, 4, 1), int).tolist()]}, 400,
     "Failed to process element: 1 of 'instances' list. Error: INVALID_ARGUMENT: Expecting "
     "tensor size: 64 but got: 32"),
    ("POST", "/v1/models/pets:predict",
     {"instances": [np.zeros((8, 8, 1), int).tolist(), np.zeros((4, 16, 1), int).tolist()]},
     400, "Expecting shape [8,8,1] but got: [4,16,1]"),
    ("POST", "/v1/models/pets:predict", {"inputs": [np.zeros((8, 8, 1), int).tolist(),
                                                    np.zeros((8, 4, 1), int).tolist()]}, 400,
     "Encountered list at unexpected size: 4 at level: 2 expected size: 8"),
    ("POST", "/v1/models/pets:predict", {"instances": ZEROS, "inputs": ZEROS}, 400,
     "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist"),
    ("POST", "/v1/models/pets:predict", {"instances": []}, 400,
     "No values in 'instances' array"),
    ("POST", "/v1/models/pets:predict", b"{", 400, "JSON Parse error: "),
    ("POST", "/v1/models/pets:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("POST", "/v1/models/pets:predict", {"instances": ZEROS, "signature_name": "nope"}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("POST", "/v1/models/pets:predict",
     {"instances": ZEROS, "signature_name": "__saved_model_init_op"}, 400,
     "Failed to get input map for signature: __saved_model_init_op"),
    # the graph's own checks (the export's shape assertion; decode_image)
    ("POST", "/v1/models/pets:predict", {"instances": np.zeros((2, 8, 4, 1), int).tolist()},
     400, "images must have shape [batch, 8, 8, 1]; got shape] [2 8 4 1]"),
    ("POST", "/v1/models/pets:predict",
     {"signature_name": "serving_bytes", "instances": [{"b64": "aGVsbG8="}]}, 400,
     "Unknown image file format"),
    # the bundle's batching_parameters.txt (max_batch_size 4): the batch scheduler's refusal
    ("POST", "/v1/models/pets:predict", {"instances": np.zeros((5, 8, 8, 1), int).tolist()},
     400, "Task size 5 is larger than maximum input batch size 4"),
    ("POST", "/v1/models/unknown:predict", {"instances": ZEROS}, 404,
     "Servable not found for request: Latest(unknown)"),
    ("POST", "/v1/models/pets/versions/9:predict", {"instances": ZEROS}, 404,
     "Servable not found for request: Specific(pets, 9)"),
    ("POST", "/v1/models/pets/labels/stable:predict", {"instances": ZEROS}, 400,
     "Unrecognized servable version label: stable"),
    # classifier.cc / regressor.cc (method-name check off, TF Serving's default)
    ("POST", "/v1/models/pets:classify", {"examples": [{}]}, 400,
     "Expected one or two output Tensors, found 4"),
    ("POST", "/v1/models/pets:regress", {"examples": [{}], "signature_name": "classify"}, 400,
     "Expected one output Tensor."),
    ("POST", "/v1/models/pets:classify", {"examples": [{}], "signature_name": "nope"}, 400,
     "No signature was found with the name: nope"),
    ("POST", "/v1/models/pets:classify", {"instances": [{}]}, 400,
     "When method is classify, key 'examples' is expected and was not found"),
    # routes: anything else under /v1/ is malformed (400), outside it there is no handler (404)
    ("PUT", "/v1/models/pets", b"", 400, "Malformed request: PUT /v1/models/pets"),
    ("DELETE", "/v1/models/pets", None, 400, "Malformed request: DELETE /v1/models/pets"),
    ("GET", "/v1/models/pets:predict", None, 400, "Malformed request: GET /v1/models/pets:predict"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("GET", "/v2/models/pets", None, 404, "Not Found"),
    ("POST", "/v1/models/pets:predict", b"{" + b" " * (1024 * 1024 + 1) + b"}", 413,
     "larger than the limit"),
])
def test_bad_requests_get_tf_serving_status_and_error(server, method, path, body, status,
                                                      message):
    _, _, client = server
    got_status, got = raw(client, method, path, body)
    assert got_status == status
    text = got if isinstance(got, str) else got["error"]
    assert message in text
    assert set(got) == {"error"} or isinstance(got, str)
    assert "AVAILABLE" in [s["state"] for s in client.status("pets")["model_version_status"]]


def test_routes_are_case_insensitive_and_match_the_query_string_too(server):
    """TF Serving matches its routes against ``uri_path()``, which is path?query#fragment
    (util/net_http/server/internal/evhttp_request.cc): a query makes a Malformed request."""
    _, _, client = server
    assert raw(client, "GET", "/V1/MODELS/pets/METADATA")[0] == 200
    assert raw(client, "POST", "/v1/Models/pets:PREDICT", {"instances": ZEROS})[0] == 200
    assert raw(client, "POST", "/v1/models/pets:predict?x=1", {"instances": ZEROS}) == (
        400, {"error": "Malformed request: POST /v1/models/pets:predict?x=1"})
    assert raw(client, "POST", "/v1/Models/pets:PREDICT?", {"instances": ZEROS}) == (
        400, {"error": "Malformed request: POST /v1/Models/pets:PREDICT?"})
    assert raw(client, "GET", "/V1/MODELS/pets/METADATA?x=1") == (
        400, {"error": "Malformed request: GET /V1/MODELS/pets/METADATA?x=1"})
    # kModelStatusApiRegex's name is [^/:]+, so the query becomes part of the model's name.
    assert raw(client, "GET", "/v1/models/pets?x=1") == (
        404, {"error": "Could not find any versions of model pets?x=1"})


@pytest.mark.parametrize("depth", [100, 990, 5000, 200000])
@pytest.mark.parametrize("wrap", ["bare", "instances", "inputs"])
def test_deeply_nested_json_gets_a_400_answer(server, depth, wrap):
    """Python's JSON parser stops at its recursion limit where RapidJSON goes on: any depth gets
    a 400 with an error body, and the connection keeps answering."""
    _, _, client = server
    nested = "[" * depth + "]" * depth
    body = {"bare": nested, "instances": f'{{"instances": {nested}}}',
            "inputs": f'{{"inputs": {{"images": {nested}}}}}'}[wrap].encode()
    host, port = client.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    for _ in range(2):  # keep-alive: the same connection answers again
        connection.request("POST", "/v1/models/pets:predict", body=body)
        response = connection.getresponse()
        answer = json.loads(response.read())
        assert response.status == 400 and set(answer) == {"error"}
    connection.close()
    if depth >= 990:  # Python's parser stops near its recursion limit
        assert answer == {"error": "JSON Parse error: The document nests arrays and objects too "
                                   "deeply for keras-resnet serve."}
    assert raw(client, "POST", "/v1/models/pets:predict", {"instances": ZEROS})[0] == 200


def test_gzip_chunked_and_unpadded_base64_bodies(server):
    import gzip

    model, _, client = server
    pixels = np.random.default_rng(9).integers(0, 256, (1, 8, 8)).astype(np.uint8)
    want = expected(model, pixels)[0]
    body = json.dumps({"instances": pixels[..., None].tolist()}).encode()
    host, port = client.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/v1/models/pets:predict", body=gzip.compress(body),
                       headers={"Content-Encoding": "gzip"})
    first = json.loads(connection.getresponse().read())
    connection.request("POST", "/v1/models/pets:predict",
                       body=iter([body[:100], body[100:]]), encode_chunked=True)
    second = json.loads(connection.getresponse().read())
    connection.close()
    for answer in (first, second):
        np.testing.assert_allclose(answer["predictions"][0]["probabilities"], want, atol=1e-5)
    padded = base64.b64encode(png(pixels[0])).decode()
    unpadded = padded.rstrip("=")
    assert unpadded != padded  # this PNG's base64 does end in padding
    status, answer = raw(client, "POST", "/v1/models/pets:predict",
                         {"signature_name": "serving_bytes", "instances": [{"b64": unpadded}]})
    assert status == 200
    np.testing.assert_allclose(answer["predictions"][0]["probabilities"], want, atol=1e-5)


def test_uint8_integers_wrap_as_tf_serving_casts_them(server):
    """TF Serving puts JSON ints in int_val and casts to uint8 (300 -> 44): no range check."""
    _, _, client = server
    answers = [raw(client, "POST", "/v1/models/pets:predict",
                   {"instances": np.full((1, 8, 8, 1), v).tolist()})[1] for v in (300, 44)]
    assert answers[0] == answers[1]


def test_32_concurrent_clients_no_errors_with_bad_requests_interleaved(server):
    """Keep-alive connections: a refused request in between must not cost the next good one."""
    model, _, client = server
    pixels = np.random.default_rng(3).integers(0, 256, (2, 8, 8)).astype(np.uint8)
    want = expected(model, pixels)
    good = json.dumps({"instances": pixels[..., None].tolist()}).encode()
    bad = json.dumps({"signature_name": "serving_bytes",
                      "instances": [{"b64": base64.b64encode(b"not an image").decode()}]}
                     ).encode()
    host, port = client.url.removeprefix("http://").split(":")
    per_client = 6

    def worker(_):
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        statuses, worst = [], 0.0
        for number in range(2 * per_client):
            connection.request("POST", "/v1/models/pets:predict",
                               body=bad if number % 2 else good)
            response = connection.getresponse()
            body = json.loads(response.read())
            statuses.append(response.status)
            if not number % 2:
                got = np.array([row["probabilities"] for row in body["predictions"]])
                worst = max(worst, float(np.abs(got - want).max()))
        connection.close()
        return statuses, worst

    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        results = list(pool.map(worker, range(32)))
    seconds = time.perf_counter() - started
    assert [statuses for statuses, _ in results] == [[200, 400] * per_client] * 32
    assert max(worst for _, worst in results) <= 1e-5
    done = 32 * 2 * per_client
    print(f"{done} requests on 32 keep-alive connections in {seconds:.2f} s: "
          f"{done / seconds:.0f} req/s")


def test_grpc_predict_metadata_status_and_output_filter(server):
    model, _, client = server
    pixels = np.random.default_rng(4).integers(0, 256, (2, 8, 8)).astype(np.uint8)
    request = Client.predict_request("pets", {"images": pixels[..., None]}, version=1)
    assert (request.model_spec.name, request.model_spec.version.value) == ("pets", 1)
    assert request.inputs["images"].dtype == 4  # DT_UINT8
    outputs = client.grpc_predict("pets", {"images": pixels[..., None]})
    np.testing.assert_allclose(outputs["probabilities"], expected(model, pixels), atol=1e-5)
    assert outputs["labels"].shape == (2, 2)
    assert sorted(client.grpc_predict("pets", {"images": pixels[..., None]},
                                      output_filter=["classes"])) == ["classes"]
    assert sorted(client.grpc_metadata("pets")) == ["__saved_model_init_op", "classify",
                                                  "serving_bytes", "serving_default"]
    assert client.grpc_status("pets") == [(1, "AVAILABLE")]
    with pytest.raises(ServingError, match=r"NOT_FOUND: Could not find any versions of model "
                                           r"nope"):  # get_model_status_impl.cc
        client.grpc_status("nope")
    with pytest.raises(ServingError, match=r"NOT_FOUND: Servable not found for request: "
                                           r"Latest\(nope\)"):
        client.grpc_metadata("nope")
    with pytest.raises(ServingError, match="INVALID_ARGUMENT: output tensor alias not found in "
                                           "signature: nope Outputs expected to be in the set "
                                           r"\{classes,labels,probabilities,scores\}."):
        client.grpc_predict("pets", {"images": pixels[..., None]}, output_filter=["nope"])
    with pytest.raises(ServingError, match=r"INVALID_ARGUMENT: assertion failed: \[images must "
                                           r"have shape \[batch, 8, 8, 1\]; got shape\] "
                                           r"\[2 8 8\]"):
        client.grpc_predict("pets", {"images": pixels})


def test_grpc_answers_like_tf_serving_to_raw_requests(server):
    _, _, client = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(client.grpc_target))
    floats = Client.predict_request("pets", {"images": np.zeros((1, 8, 8, 1), np.float32)})
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(floats, timeout=30)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details() == "Expects arg[0] to be uint8 but float is provided"
    extra = Client.predict_request("pets", {"images": np.zeros((1, 8, 8, 1), np.uint8),
                                            "other": np.zeros(1, np.uint8)})
    with pytest.raises(grpc.RpcError) as caught:
        stub.Predict(extra, timeout=30)
    assert caught.value.details() == (
        "input size does not match signature: 2!=1 len({images,other}) != len({images}). "
        "Sent extra: {other}. Missing but required: {}.")
    answer = stub.Predict(Client.predict_request("pets", {"images": np.zeros((1, 8, 8, 1),
                                                                            np.uint8)}))
    scores = answer.outputs["scores"]  # typed *_val fields, as TF Serving fills them
    assert len(scores.float_val) == 2 and scores.tensor_content == b""
    assert len(answer.outputs["classes"].int64_val) == 2
    assert answer.model_spec.version.value == 1


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


@pytest.mark.slow
def test_new_replaced_and_deleted_versions(server):
    """Like TF Serving: new versions load, deleted ones unload, a reused number is reloaded."""
    model, base, client = server
    pixels = np.random.default_rng(7).integers(0, 256, (1, 8, 8)).astype(np.uint8)

    def wait_for(version, want):
        deadline = time.monotonic() + 60
        while True:
            served = [s["version"] for s in client.status("pets")["model_version_status"]
                      if s["state"] == "AVAILABLE"]
            rows = client.predict("pets", instances=pixels[..., None])["predictions"]
            if served == [version] and np.allclose(rows[0]["probabilities"], want, atol=1e-5):
                return
            assert time.monotonic() < deadline, f"version {version} was not served"
            time.sleep(0.25)

    other = small_model(seed=1)
    export_saved_model(other, base, name="pets", class_names=NAMES, top_k=2,
                       warmup_batch_sizes=(1,), max_batch_size=MAX_BATCH)
    wait_for("2", expected(other, pixels)[0])
    shutil.rmtree(base / "pets" / "2")
    wait_for("1", expected(model, pixels)[0])
    third = small_model(seed=2)
    export_saved_model(third, base, name="pets", version=2, class_names=NAMES, top_k=2,
                       warmup_batch_sizes=(1,), max_batch_size=MAX_BATCH)
    wait_for("2", expected(third, pixels)[0])  # the new weights under the reused number
    shutil.rmtree(base / "pets" / "2")
    wait_for("1", expected(model, pixels)[0])


def test_client_validates_arguments():
    with pytest.raises(ValueError, match="url must be an http"):
        Client("127.0.0.1:8501")
    with pytest.raises(ValueError, match="grpc_target must be 'host:port'"):
        Client("http://x", grpc_target="x")
    with pytest.raises(ValueError, match="exactly one of instances"):
        Client("http://x").predict("m")
    with pytest.raises(ValueError, match=r"version must be a positive int \(1, 2, 64, ...\); "
                                         "got 0"):
        Client("http://x").predict("m", instances=[1], version=0)
    with pytest.raises(ServingError, match="cannot reach"):
        Client(f"http://127.0.0.1:{free_port()}", timeout=5).status("m")


@pytest.mark.parametrize("argv, message", [
    (["--max-body-mb", "0"], "--max-body-mb must be a number > 0 (e.g. 32); got 0.0"),
    (["--host", "203.0.113.5"], "--host '203.0.113.5' is not an address of this machine"),
    (["--port", "0"], "--port must be an int in [1, 65535]; got 0"),
])
def test_serve_cli_bad_options_exit_2(argv, message, tmp_path, capsys):
    assert main(["serve", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err == f"keras-resnet serve: error: {message}\n"


def test_serve_cli_port_in_use_exit_2(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["serve", str(tmp_path), "--port", str(port)]) == 2
    assert capsys.readouterr().err == (f"keras-resnet serve: error: --port {port} is already in "
                                       "use on 127.0.0.1\n")


def test_predict_cli_without_a_server_exit_2(tmp_path, capsys):
    (tmp_path / "a.png").write_bytes(png(np.zeros((8, 8), np.uint8)))
    assert main(["predict", "--server", "http://127.0.0.1:1", "--model", "pets",
                 str(tmp_path / "a.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-resnet predict: error: --server http://127.0.0.1:1: cannot "
                          "reach http://127.0.0.1:1/v1/models/pets/metadata: ")
    assert len(err.strip().splitlines()) == 1


def test_version_labels_and_pinned_versions(server):
    """models.config's version_labels: /labels/<label> over REST, version_label over gRPC."""
    _, base, client = server
    first, second = small_model(seed=3), small_model(seed=4)
    for model, label in ((first, "stable"), (second, "canary")):
        export_saved_model(model, base, name="labelled", warmup_batch_sizes=(1,),
                           max_batch_size=MAX_BATCH, version_labels=(label,))
    deadline = time.monotonic() + 60
    while True:
        try:
            states = client.status("labelled")["model_version_status"]
            if [s["state"] for s in states] == ["AVAILABLE", "AVAILABLE"]:
                break
        except ServingError:
            pass
        assert time.monotonic() < deadline, "both labelled versions were not loaded"
        time.sleep(0.25)
    assert [s["version"] for s in client.status("labelled")["model_version_status"]] == ["2", "1"]
    pixels = np.random.default_rng(8).integers(0, 256, (1, 8, 8)).astype(np.uint8)
    for model, label, version in ((first, "stable", 1), (second, "canary", 2)):
        want = expected(model, pixels)
        by_label = client.predict("labelled", instances=pixels[..., None], label=label)
        np.testing.assert_allclose(by_label["predictions"][0]["probabilities"], want[0],
                                   atol=1e-5)
        by_version = client.predict("labelled", instances=pixels[..., None], version=version)
        assert by_version == by_label
        grpc_outputs = client.grpc_predict("labelled", {"images": pixels[..., None]},
                                           label=label)
        np.testing.assert_allclose(grpc_outputs["probabilities"], want, atol=1e-5)
    assert client.metadata("labelled", label="stable")["model_spec"]["version"] == "1"
    latest = client.predict("labelled", instances=pixels[..., None])
    np.testing.assert_allclose(latest["predictions"][0]["probabilities"],
                               expected(second, pixels)[0], atol=1e-5)
    assert raw(client, "GET", "/v1/models/labelled/versions/7")[1] == {
        "error": "Could not find version 7 of model labelled"}


def test_classify_over_rest_and_grpc(server):
    """The export's classify signature answers TF Serving's :classify and Classify."""
    from tensorflow_serving.apis import classification_pb2

    from keras_resnet.export.signatures import image_examples

    model, _, client = server
    pixels = np.random.default_rng(10).integers(0, 256, (2, 8, 8)).astype(np.uint8)
    probabilities = expected(model, pixels)
    want = [[NAMES[i] for i in np.argsort(-p)[:2]] for p in probabilities]
    rows = client.classify("pets", encoded=[png(p) for p in pixels])
    assert [[label for label, _ in row] for row in rows] == want
    np.testing.assert_allclose([[score for _, score in row] for row in rows],
                               np.sort(probabilities, axis=-1)[:, ::-1][:, :2], atol=1e-5)
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name, request.model_spec.signature_name = "pets", "classify"
    for serialized in image_examples([png(p) for p in pixels]):
        request.input.example_list.examples.add().ParseFromString(serialized)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(client.grpc_target))
    response = stub.Classify(request, timeout=30)
    assert [[c.label for c in row.classes] for row in response.result.classifications] == want
    assert response.model_spec.version.value == 1


def wait_status(client, name, want, seconds=60):
    """Polls ``GET /v1/models/<name>`` until its versions' (version, state, error_code) are
    ``want``; returns the last answer."""
    deadline = time.monotonic() + seconds
    while True:
        status, body = raw(client, "GET", f"/v1/models/{name}")
        got = [(s["version"], s["state"], s["status"]["error_code"])
               for s in body.get("model_version_status", [])] if status == 200 else body
        if got == want:
            return body
        assert time.monotonic() < deadline, f"{name} status stayed {got}, wanted {want}"
        time.sleep(0.1)


def test_version_states_as_the_servable_state_monitor_keeps_them(server):
    """get_model_status_impl.cc reads ServableStateMonitor, which never forgets a version:
    unloaded ones are END (OK), a failed load is END with its error, and the newest serving
    version stays while a newer one fails (AvailabilityPreservingPolicy)."""
    from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

    from keras_resnet.export.deployment import write_models_config

    _, base, client = server
    shutil.copytree(base / "pets" / "1", base / "unlisted" / "1")
    shutil.copytree(base / "pets" / "1", base / "states" / "1")
    write_models_config(base, labels=None)  # lists both
    wait_status(client, "states", [("1", "AVAILABLE", "OK")])
    wait_status(client, "unlisted", [("1", "AVAILABLE", "OK")])
    # a model models.config no longer lists is unloaded (--model_config_file)
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    config = text_format.Parse((base / "models.config").read_text(),
                               model_server_config_pb2.ModelServerConfig())
    kept = [entry for entry in config.model_config_list.config if entry.name != "unlisted"]
    del config.model_config_list.config[:]
    config.model_config_list.config.extend(kept)
    (base / "models.tmp").write_text(text_format.MessageToString(config))
    (base / "models.tmp").replace(base / "models.config")
    wait_status(client, "unlisted", [("1", "END", "OK")])
    shutil.rmtree(base / "unlisted")
    shutil.copytree(base / "pets" / "1", base / "states" / "2")
    wait_status(client, "states", [("2", "AVAILABLE", "OK"), ("1", "END", "OK")])
    (base / "states" / "3").mkdir()
    (base / "states" / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
    body = wait_status(client, "states", [("3", "END", "UNKNOWN"), ("2", "AVAILABLE", "OK"),
                                          ("1", "END", "OK")])
    assert body["model_version_status"][0]["status"]["error_message"]
    assert client.metadata("states")["model_spec"]["version"] == "2"
    assert raw(client, "GET", "/v1/models/states/versions/1") == (200, {
        "model_version_status": [{"version": "1", "state": "END",
                                  "status": {"error_code": "OK", "error_message": ""}}]})
    shutil.rmtree(base / "states")
    wait_status(client, "states", [("3", "END", "UNKNOWN"), ("2", "END", "OK"),
                                   ("1", "END", "OK")])
    assert raw(client, "POST", "/v1/models/states:predict", {"instances": ZEROS}) == (
        404, {"error": "Servable not found for request: Latest(states)"})
    stub = model_service_pb2_grpc.ModelServiceStub(grpc.insecure_channel(client.grpc_target))
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "states"
    answer = stub.GetModelStatus(request, timeout=30)
    assert [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state))
            for s in answer.model_version_status] == [(3, "END"), (2, "END"), (1, "END")]
    assert answer.model_version_status[0].status.error_code != 0


def raw_text(client, path, body):
    """POSTs ``body`` (bytes) and returns (status, the response body as text)."""
    host, port = client.url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", path, body=body)
    response = connection.getresponse()
    text = response.read().decode()
    connection.close()
    return response.status, text


def test_non_finite_numbers_in_and_out_as_rapidjson_and_json_tensor(server):
    """ParseJson's kParseNanAndInfFlag (RapidJSON 1.1.0) reads NaN, -NaN, Inf, -Inf, Infinity,
    -Infinity; a float input takes them (IsLosslessDecimal lets non-finite through) and
    WriteDecimal writes non-finite outputs as NaN / Infinity / -Infinity."""
    model, _, client = server
    image = np.zeros((8, 8, 1))
    image[0, 0, 0] = 12345.5  # replaced by the token in the JSON text
    template = json.dumps({"instances": [image.tolist()]}).encode()
    for token in ("NaN", "-NaN", "Inf", "-Inf", "Infinity", "-Infinity"):
        body = template.replace(b"12345.5", token.encode())
        status, text = raw_text(client, "/v1/models/floaty:predict", body)
        assert status == 200, text
        assert len(json.loads(text)["predictions"][0]["probabilities"]) == 3
    want = expected(model, np.zeros((1, 8, 8)))
    zeros = json.dumps(np.zeros((1, 8, 8, 1)).tolist()).encode()
    status, text = raw_text(client, "/v1/models/floaty:predict", b'{"inputs": %s}' % zeros)
    assert status == 200
    np.testing.assert_allclose(json.loads(text)["outputs"]["probabilities"], want, atol=1e-5)
    # outputs: the JSON the server writes for non-finite float32 and float64 values
    from keras_resnet.serving import rest

    values = np.array([np.nan, np.inf, -np.inf, 0.1], np.float32)
    assert json.dumps(rest._to_json({"x": values}, rows=False)) == (
        '{"outputs": [NaN, Infinity, -Infinity, 0.1]}')
    assert json.dumps(rest._to_json({"x": values[:, None].astype(np.float64), "y": values[:, None]},
                                    rows=True)["predictions"][:3]) == (
        '[{"x": [NaN], "y": [NaN]}, {"x": [Infinity], "y": [Infinity]}, '
        '{"x": [-Infinity], "y": [-Infinity]}]')
    # a uint8 input takes JSON integers only: the token is quoted as WriteDecimal writes it
    for token, shown in (("NaN", "NaN"), ("-Inf", "-Infinity"), ("Infinity", "Infinity")):
        body = b'{"instances": [[[[%s]]]]}' % token.encode()
        assert raw_text(client, "/v1/models/pets:predict", body) == (400, json.dumps({
            "error": "Failed to process element: 0 of 'instances' list. Error: "
                     f"INVALID_ARGUMENT: JSON Value: {shown} Type: Number is not of expected "
                     "type: uint8"}))
    # tf.Example features: a double is a float_list value, non-finite included
    status, text = raw_text(client, "/v1/models/pets:classify", json.dumps({
        "signature_name": "classify", "context": {"weight": [float("nan"), float("-inf")]},
        "examples": [{"image/encoded": {"b64": base64.b64encode(png(np.zeros((8, 8), np.uint8)))
                                        .decode()}}]}).encode())
    assert status == 200 and len(json.loads(text)["results"][0]) == 2


ELEMENT_0 = "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "


@pytest.mark.parametrize("path, body, message", [
    ("pets", b'{"instances": [1,}', "JSON Parse error: Invalid value. at offset: 17"),
    ("pets", b'{"instances": [1 2]}', "JSON Parse error: Missing a comma or ']' after an array "
                                      "element. at offset: 17"),
    ("pets", b'{"instances": [1]', "JSON Parse error: Missing a comma or '}' after an object "
                                   "member. at offset: 17"),
    ("pets", b'{"instances": [Inf] "x"}', "JSON Parse error: Missing a comma or '}' after an "
                                          "object member. at offset: 20"),
    ("pets", b'  ', "JSON Parse error: The document is empty. at offset: 2"),
    ("pets", b'[1]', "JSON Value: [\n    1\n] Is not object"),
    ("pets", b'{"instances": 5}',
     "JSON Value: {\n    \"instances\": 5\n} Excepting 'instances' to be an list/array"),
    ("pets", b'{"instances": [], "x": 2.5e-7}',
     "JSON Value: {\n    \"instances\": [],\n    \"x\": 2.5e-7\n} No values in 'instances' "
     "array"),
    ("pets", b'{"instances": [[[[2147483648]]]]}', ELEMENT_0 + "JSON Value: 2147483648 Type: "
     "Number is not of expected type: uint8"),
    ("pets", b'{"instances": [[[[3.14159265]]]]}', ELEMENT_0 + "JSON Value: 3.1415926500000002 "
     "Type: Number is not of expected type: uint8"),
    ("floaty", b'{"instances": [[[[16777217]]]]}', ELEMENT_0 + "Cannot convert JSON value: "
     "16777217 to float without loss of precision."),
    ("floaty", b'{"inputs": [[[[1e39]]]]}', "Cannot convert JSON value: 1e+39 to float "
                                            "without loss of precision."),
    ("pets", b'{"instances": [{"images": [[[0]]], "x": 1}]}', "Failed to process element: 0 "
     "key: x of 'instances' list. Error: INVALID_ARGUMENT: JSON object: does not have named "
     "input: x"),
    ("pets", b'{"instances": [[[[0]]], {"images": 1}]}', "Expecting value/list but got object "
                                                         "at item 1 of input list"),
])
def test_json_errors_read_as_tf_serving_writes_them(server, path, body, message):
    _, _, client = server
    status, text = raw_text(client, f"/v1/models/{path}:predict", body)
    assert (status, json.loads(text)) == (400, {"error": message})


def test_grpc_multi_inference_and_example_checks(server):
    """multi_inference.cc's checks and results; classifier/regressor check the signature
    before reading the Input ("Input is empty."); ServerCore refuses a nameless ModelSpec."""
    from tensorflow_serving.apis import (classification_pb2, inference_pb2, predict_pb2,
                                         regression_pb2)

    from keras_resnet.export.signatures import image_examples

    model, _, client = server
    stub = prediction_service_pb2_grpc.PredictionServiceStub(
        grpc.insecure_channel(client.grpc_target))
    pixels = np.random.default_rng(11).integers(0, 256, (2, 8, 8)).astype(np.uint8)
    request = inference_pb2.MultiInferenceRequest()
    task = request.tasks.add(method_name="tensorflow/serving/classify")
    task.model_spec.name, task.model_spec.signature_name = "pets", "classify"
    for serialized in image_examples([png(p) for p in pixels]):
        request.input.example_list.examples.add().ParseFromString(serialized)
    response = stub.MultiInference(request, timeout=30)
    probabilities = expected(model, pixels)
    (result,) = response.results
    assert result.model_spec.version.value == 1 and result.model_spec.signature_name == "classify"
    assert [[c.label for c in row.classes] for row in
            result.classification_result.classifications] == [
        [NAMES[i] for i in np.argsort(-p)[:2]] for p in probabilities]

    def refused(method, message, code=grpc.StatusCode.INVALID_ARGUMENT):
        with pytest.raises(grpc.RpcError) as raised:
            method(timeout=30)
        assert (raised.value.code(), raised.value.details()) == (code, message)

    duplicate = inference_pb2.MultiInferenceRequest()
    duplicate.CopyFrom(request)
    duplicate.tasks.add().CopyFrom(task)
    refused(lambda **kw: stub.MultiInference(duplicate, **kw),
            "Duplicate evaluation of signature: classify")
    regress = inference_pb2.MultiInferenceRequest()
    regress.CopyFrom(request)
    regress.tasks[0].method_name = "tensorflow/serving/regress"
    refused(lambda **kw: stub.MultiInference(regress, **kw), "Expected one output Tensor.")
    regress.tasks[0].method_name = "tensorflow/serving/predict"
    refused(lambda **kw: stub.MultiInference(regress, **kw),
            "Unsupported signature method_name: tensorflow/serving/predict",
            grpc.StatusCode.UNIMPLEMENTED)
    refused(lambda **kw: stub.MultiInference(inference_pb2.MultiInferenceRequest(), **kw),
            "ModelSpec has no name specified.")
    empty = classification_pb2.ClassificationRequest()
    empty.model_spec.name, empty.model_spec.signature_name = "pets", "classify"
    refused(lambda **kw: stub.Classify(empty, **kw), "Input is empty.")
    empty_regress = regression_pb2.RegressionRequest()
    empty_regress.model_spec.name = "pets"
    refused(lambda **kw: stub.Regress(empty_regress, **kw), "Expected one output Tensor.")
    refused(lambda **kw: stub.Predict(predict_pb2.PredictRequest(), **kw),
            "ModelSpec has no name specified.")


_CONV_CALLS = textwrap.dedent("""
    import sys
    from keras_resnet._tensorflow import assume_frozen_weights
    if sys.argv[1] == "serve":
        assume_frozen_weights()
    import tensorflow as tf
    weights = tf.Variable(tf.random.normal((3, 3, 16, 32)))
    conv = tf.function(lambda x: tf.nn.relu(tf.nn.conv2d(x, weights, 1, "SAME")))
    images = tf.random.normal((2, 16, 16, 16))
    conv(images)
    print("after the first call", flush=True)
    conv(images)
    conv(images)
""")


@pytest.mark.parametrize("mode", ["serve", "train"])
def test_a_serving_process_reorders_weights_once(mode, tmp_path):
    # oneDNN reorders a convolution's weights into its blocked layout on every call unless the
    # process assumes frozen weights, which `keras-resnet serve` does (1.5x bfloat16 at batch 1).
    env = {k: v for k, v in os.environ.items() if k != "TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"}
    result = subprocess.run([sys.executable, "-c", _CONV_CALLS, mode], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path,
                            env={**env, "ONEDNN_VERBOSE": "1", "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-2000:]
    if "onednn_verbose" not in result.stdout:
        pytest.skip("this TensorFlow runs convolutions without oneDNN (no verbose lines)")
    later = result.stdout.split("after the first call", 1)[1].splitlines()
    executed = [line for line in later if line.startswith("onednn_verbose") and ",exec," in line]
    assert sum(",convolution," in line for line in executed) == 2
    reorders = sum(",reorder," in line for line in executed)
    assert (reorders == 0) if mode == "serve" else (reorders > 0), executed


def test_serve_command_assumes_frozen_weights(monkeypatch, capsys):
    monkeypatch.delenv("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", raising=False)
    assert main(["serve", "--max-body-mb", "-1"]) == 2  # refused before it binds a port
    assert os.environ["TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"] == "1"
    monkeypatch.setenv("TF_ONEDNN_ASSUME_FROZEN_WEIGHTS", "0")  # the user's choice is kept
    assert main(["serve", "--max-body-mb", "-1"]) == 2
    assert os.environ["TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"] == "0"
