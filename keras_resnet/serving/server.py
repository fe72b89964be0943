"""`serve`: KServe's Python model server with TF Serving's REST shape, plus an optional gRPC API.

KServe's v1 data plane already speaks TF Serving's predict shape (``POST /v1/models/<name>:
predict``, ``instances`` -> ``predictions``). On top of it this adds what TF Serving also answers
(model status, ``/metadata``, ``/versions/<v>`` routes), a guard in front of everything (request
body size limit, model names that cannot exist such as ``../x``), binding to 127.0.0.1 (KServe's
own server binds every interface), and optionally ``PredictionService`` over gRPC through
``tensorflow-serving-api``, backed by the same loaded models.
"""

# No `from __future__ import annotations`: FastAPI reads the route functions' annotations.
import asyncio
import json
import logging
import os
import sys

from keras_resnet.serving.client import MAX_BODY_BYTES
from keras_resnet.serving.repository import (BadRequest, NotFound, Repository,
                                             check_request_path)


def _import_kserve():
    """Imports kserve; its module-level argparse reads sys.argv, so hide ours from it."""
    argv = sys.argv
    sys.argv = argv[:1]
    try:
        import kserve
        import kserve.errors
        import kserve.model_server
        from kserve.protocol.rest.server import RESTServer
    except ImportError as error:
        raise ImportError("`keras-resnet serve` needs KServe: pip install 'keras_resnet[serve]' "
                          f"({error})") from None
    finally:
        sys.argv = argv
    return kserve, RESTServer


class _OneLineClientErrors(logging.Filter):
    """KServe logs a traceback for every refused request; a client's mistake needs one line."""

    def filter(self, record):
        error = record.exc_info[1] if record.exc_info else None
        if error is not None and type(error).__name__ in ("InvalidInput", "ModelNotFound"):
            record.msg, record.args, record.exc_info = f"{type(error).__name__}: {error}", (), None
        return True


def _json_response(status, message):
    body = json.dumps({"error": message}).encode()
    return ({"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]},
            {"type": "http.response.body", "body": body})


class _Guard:
    """ASGI middleware: refuses impossible model names (400) and bodies over the limit (413)."""

    def __init__(self, app, max_body_bytes):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        problem = check_request_path(scope["path"])
        if problem:
            return await self._refuse(receive, send, 400, problem, drain=True)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length", b"0")
        too_big = (f"request body is larger than the limit of {self.max_body_bytes} bytes "
                   "(keras-resnet serve --max-body-mb); send smaller batches")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return await self._refuse(receive, send, 413, too_big, drain=True)
        if scope["method"] not in ("POST", "PUT"):
            return await self.app(scope, receive, send)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return await self._refuse(receive, send, 413, too_big, drain=True)
            chunks.append(chunk)
            if not message.get("more_body"):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return await self.app(scope, replay, send)

    async def _refuse(self, receive, send, status, message, drain):
        # Read (and drop) what the client is still sending, up to 4x the limit, so it gets the
        # answer instead of a reset connection.
        budget = 4 * self.max_body_bytes
        while drain and budget > 0:
            event = await receive()
            budget -= len(event.get("body", b""))
            if event["type"] != "http.request" or not event.get("more_body"):
                break
        start, body = _json_response(status, message)
        await send(start)
        await send(body)


def _tf_serving_router(repository):
    """TF Serving's GET routes and the versioned predict route KServe's v1 API lacks."""
    from fastapi import APIRouter, Request
    from fastapi.responses import JSONResponse

    router = APIRouter()

    def answer(function, *args):
        try:
            return JSONResponse(function(*args))
        except NotFound as error:
            return JSONResponse({"error": str(error)}, status_code=404)
        except BadRequest as error:
            return JSONResponse({"error": str(error)}, status_code=400)

    def version_number(version):
        if not version.isdigit():
            raise BadRequest(f"version must be a positive integer; got {version!r}")
        return int(version)

    @router.get("/v1/models/{name}")
    async def status(name: str):
        return answer(repository.status, name)

    @router.get("/v1/models/{name}/versions/{version}")
    async def status_version(name: str, version: str):
        return answer(lambda: repository.status(name, version_number(version)))

    @router.get("/v1/models/{name}/metadata")
    async def metadata(name: str):
        return answer(repository.metadata, name)

    @router.get("/v1/models/{name}/versions/{version}/metadata")
    async def metadata_version(name: str, version: str):
        return answer(lambda: repository.metadata(name, version_number(version)))

    @router.post("/v1/models/{name}/versions/{version}:predict")
    async def predict_version(name: str, version: str, request: Request):
        body = await request.body()
        return await asyncio.to_thread(
            answer, lambda: repository.predict_json(name, body, version_number(version)))

    return router


def _kserve_model(kserve, repository, name):
    """A KServe Model for one model name; KServe's v1 endpoint routes predict calls here."""

    class SavedModelPredictor(kserve.Model):
        def __init__(self):
            super().__init__(name)
            self.ready = True

        async def predict(self, payload, headers=None):
            try:
                return await asyncio.to_thread(repository.predict_json, name, payload)
            except BadRequest as error:
                raise kserve.errors.InvalidInput(str(error)) from None
            except NotFound as error:
                raise kserve.errors.ModelNotFound(name) from error

    return SavedModelPredictor()


class _GrpcPredictionService:
    """TF Serving's ``PredictionService.Predict`` over gRPC, backed by the repository."""

    def __init__(self, repository):
        self.repository = repository

    def Predict(self, request, context):  # noqa: N802 (the gRPC method name)
        import grpc
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        spec = request.model_spec
        version = spec.version.value if spec.HasField("version") else None
        signature = spec.signature_name or "serving_default"
        try:
            served = self.repository.get(spec.name, version)
            outputs = served.run(signature, {k: tf.make_ndarray(v)
                                             for k, v in request.inputs.items()})
        except NotFound as error:
            context.abort(grpc.StatusCode.NOT_FOUND, str(error))
        except BadRequest as error:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(error))
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.signature_name = signature
        response.model_spec.version.value = served.version
        for key, value in outputs.items():
            response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
        return response


def _start_grpc(repository, host, port):
    import concurrent.futures

    import grpc
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", MAX_BODY_BYTES),
                                  ("grpc.max_send_message_length", MAX_BODY_BYTES)])
    servicer = type("PredictionService",
                    (_GrpcPredictionService,
                     prediction_service_pb2_grpc.PredictionServiceServicer), {})(repository)
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(servicer, server)
    if server.add_insecure_port(f"{host}:{port}") == 0:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    server.start()
    return server


def serve(base_dir="saved_models", port=8501, host="127.0.0.1", grpc_port=None,
          poll_seconds=2.0, max_body_bytes=MAX_BODY_BYTES):
    """Serves the latest version of every model in ``base_dir`` until interrupted.

    Args:
        base_dir: the directory `export_saved_model` writes (``<name>/<version>/``).
        port: REST port (TF Serving's is 8501).
        host: interface to bind; 127.0.0.1 keeps it local.
        grpc_port: also serve TF Serving's gRPC PredictionService on this port (TF Serving: 8500).
        poll_seconds: how often ``base_dir`` is rescanned for new models and versions.
        max_body_bytes: larger request bodies are refused with 413.

    Raises:
        FileNotFoundError: ``base_dir`` does not exist.
        ValueError: a port or limit is out of range.
        ImportError: KServe (the ``serve`` extra) is not installed.
    """
    for argument, value in (("port", port), ("grpc_port", grpc_port)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 < value < 65536):
            raise ValueError(f"{argument} must be an int in 1..65535; got {value!r}")
    if isinstance(poll_seconds, bool) or not isinstance(poll_seconds, (int, float)) \
            or poll_seconds <= 0:
        raise ValueError(f"poll_seconds must be a number > 0; got {poll_seconds!r}")
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) \
            or max_body_bytes < 1024:
        raise ValueError(f"max_body_bytes must be an int >= 1024; got {max_body_bytes!r}")
    repository = Repository(os.fspath(base_dir))
    kserve, RESTServer = _import_kserve()
    logging.getLogger("kserve").addFilter(_OneLineClientErrors())
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    registry = ModelRepository(models_dir=repository.base_dir)
    repository.listeners.append(
        lambda name: registry.update(_kserve_model(kserve, repository, name)))
    for change in repository.scan():
        print(f"serving {change}", flush=True)
    if not repository.models:
        print(f"no exported models in {base_dir} yet; watching for them", flush=True)

    class LocalRESTServer(RESTServer):
        def create_application(self):
            app = kserve.model_server.app
            app.add_middleware(_Guard, max_body_bytes=max_body_bytes)
            # Included before KServe's v1 routes, so these answer GET /v1/models/<name>.
            app.include_router(_tf_serving_router(repository))
            super().create_application()

    dataplane = DataPlane(model_registry=registry)
    rest = LocalRESTServer(
        "kserve.model_server:app", dataplane,
        ModelRepositoryExtension(model_registry=registry), port, event_loop="asyncio")
    rest.config.host = host  # KServe's RESTServer binds 0.0.0.0; this server stays local
    grpc_server = _start_grpc(repository, host, grpc_port) if grpc_port else None
    repository.watch(poll_seconds)
    print(f"REST on http://{host}:{port}/v1/models/<name>:predict"
          + (f", gRPC on {host}:{grpc_port}" if grpc_port else ""), flush=True)
    try:
        asyncio.run(rest.start())
    finally:
        if grpc_server is not None:
            grpc_server.stop(grace=1)
