"""`serve`: TF Serving's REST API (and optionally its gRPC API) for a ``saved_models`` directory.

A plain HTTP/1.1 server (the standard library's ``ThreadingHTTPServer``) in front of
`keras_resnet.serving.rest`, which answers each route as TF Serving's C++ handler does, and a
``grpcio`` server with TF Serving's ``PredictionService`` (Predict, GetModelMetadata) and
``ModelService`` (GetModelStatus) from ``tensorflow-serving-api``. Both share one `Repository`
(models run in a Session, like TF Serving). Bound to 127.0.0.1 by default; for development and
tests, production is TF Serving (see the ``docker-run.sh`` an export writes).
"""

from __future__ import annotations

import http.server
import json
import logging
import os
import socket
import urllib.parse

from keras_resnet import checks
from keras_resnet.constants import (DEFAULT_EXPORT_DIR, DEFAULT_HOST, DEFAULT_POLL_SECONDS,
                                    DEFAULT_REST_PORT, MAX_BODY_BYTES, MIN_BODY_BYTES)
from keras_resnet.serving import rest, try_page
from keras_resnet.serving.repository import Repository

logger = logging.getLogger(__name__)


class AddressError(ValueError):
    """The server cannot listen where asked; ``argument`` names the option (``port``, ...)."""

    def __init__(self, argument, detail):
        super().__init__(f"{argument} {detail}")
        self.argument, self.detail = argument, detail


class _Handler(http.server.BaseHTTPRequestHandler):
    """One HTTP/1.1 connection; keep-alive, every body read in full so the next request parses."""

    protocol_version = "HTTP/1.1"
    server_version = "keras-resnet-serve"

    def do_GET(self):  # noqa: N802 (http.server's method names)
        self._answer("GET")

    def do_POST(self):  # noqa: N802
        self._answer("POST")

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = (
        lambda self: self._answer(self.command))

    def _answer(self, method):
        body = self._read_body()
        if body is None:
            return
        path = request_target(self.path)
        if method in ("GET", "HEAD") and urllib.parse.urlsplit(path).path in try_page.PAGE_PATHS:
            return self._send(200, try_page.page(self.server.repository),
                              "text/html; charset=utf-8")
        if not rest.API_PATH.fullmatch(path):
            # TF Serving registers no handler outside /v1/: its HTTP server's plain 404
            return self._send(404, b"Not Found", "text/plain")
        status, payload = rest.handle(self.server.repository, method, path, body)
        self._send(status, rest.response_bytes(payload), "application/json")

    def _read_body(self):
        """The request body (chunked or not, gzip-decoded), or None after refusing it."""
        limit = self.server.max_body_bytes
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = self._read_chunked(limit)
        else:
            length = self.headers.get("Content-Length", "0").strip()
            if not length.isdigit():
                return self._refuse(400, f"bad Content-Length {length!r}")
            body = self._read_exactly(int(length), limit)
        if body is not None and self.headers.get("Content-Encoding", "").lower() == "gzip":
            body = _gunzip(body, limit)
        if body is None:
            return self._refuse(413, f"request body is larger than the limit of {limit} bytes "
                                     "(keras-resnet serve --max-body-mb); send smaller batches")
        return body

    def _read_exactly(self, length, limit):
        if length <= limit:
            return self.rfile.read(length)
        # Read (and drop) a body up to 4x the limit so the client gets the answer rather than a
        # reset connection; larger ones are cut off.
        left = length if length <= 4 * limit else 0
        while left > 0:
            chunk = self.rfile.read(min(left, 1 << 20))
            if not chunk:
                break
            left -= len(chunk)
        return None

    def _read_chunked(self, limit):
        chunks, size = [], 0
        while True:
            line = self.rfile.readline(1024).split(b";")[0].strip()
            length = int(line, 16) if line and all(c in b"0123456789abcdefABCDEF" for c in line) \
                else 0
            if length == 0:
                while self.rfile.readline(1024).strip():  # trailers, then the empty line
                    pass
                return b"".join(chunks) if size <= limit else None
            data = self.rfile.read(length)
            self.rfile.readline(8)  # the CRLF after each chunk
            size += len(data)
            if size <= limit:
                chunks.append(data)

    def _refuse(self, status, message):
        self._send(status, json.dumps({"error": message}).encode(), "application/json",
                   close=True)
        return None

    def _send(self, status, data, content_type, close=False):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if close:  # the unread body would be parsed as the next request: end the connection
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def log_message(self, format, *args):  # noqa: A002 (http.server's signature)
        logger.debug("%s %s", self.address_string(), format % args)


def request_target(target: str) -> str:
    """The path, query and fragment that TF Serving's routes match (``uri_path()``).

    libevent's ``EvHTTPRequest::uri_path`` is the parsed URI's path followed by ``?query`` and
    ``#fragment`` when present (evhttp_request.cc), so ``:predict?x=1`` matches no route and is
    a ``Malformed request``. An absolute-form target (``http://host/v1/...``) gives its path.
    """
    if target.startswith("/"):
        return target
    parts = urllib.parse.urlsplit(target)
    return ((parts.path or "/") + ("?" + parts.query if "?" in target else "")
            + ("#" + parts.fragment if "#" in target else ""))


def _gunzip(body, limit):
    """The gzip-decoded body, or None when it would exceed ``limit`` bytes."""
    import zlib

    decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    try:
        data = decoder.decompress(body, limit + 1)
    except zlib.error:
        return body  # not gzip after all: let the JSON parser report it
    return data if len(data) <= limit else None


class RestServer(http.server.ThreadingHTTPServer):
    """TF Serving's REST API for ``repository`` on ``(host, port)``."""

    daemon_threads = True
    request_queue_size = 128

    def __init__(self, repository, host, port, max_body_bytes=MAX_BODY_BYTES):
        self.repository = repository
        self.max_body_bytes = max_body_bytes
        try:
            super().__init__((host, port), _Handler)
        except socket.gaierror:
            raise AddressError("host", f"{host!r} is not a host name or address of this "
                                       "machine") from None
        except OSError as error:
            raise _address_error(error, host, port, "port") from None

    def handle_error(self, request, client_address):
        """Logs what ended a connection (socketserver would print it to stderr)."""
        logger.exception("connection from %s ended by an error", client_address[0])


def _address_error(error, host, port, argument):
    import errno

    if error.errno == errno.EADDRINUSE:
        return AddressError(argument, f"{port} is already in use on {host}")
    if error.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
        return AddressError("host", f"{host!r} is not an address of this machine")
    if error.errno == errno.EACCES:
        return AddressError(argument, f"{port} needs privileges to bind (use a port >= 1024)")
    return AddressError(argument, f"{port} cannot be bound on {host}: {error.strerror}")


def serve(base_dir=DEFAULT_EXPORT_DIR, port=DEFAULT_REST_PORT, host=DEFAULT_HOST, grpc_port=None,
          poll_seconds=DEFAULT_POLL_SECONDS, max_body_bytes=MAX_BODY_BYTES) -> None:
    """Serves the latest version of every model in ``base_dir`` until interrupted.

    Args:
        base_dir: the directory `export_saved_model` writes (``<name>/<version>/``).
        port: REST port (TF Serving's is 8501).
        host: interface to bind; 127.0.0.1 keeps it local.
        grpc_port: also serve TF Serving's gRPC API on this port (TF Serving: 8500).
        poll_seconds: how often ``base_dir`` is rescanned for new, replaced or deleted versions.
        max_body_bytes: larger request bodies are refused with 413.

    Raises:
        FileNotFoundError: ``base_dir`` does not exist.
        ValueError, TypeError: a port or limit is out of range.
        AddressError: the port is in use or the host is not an address of this machine.
    """
    checks.positive_int(port, "port", maximum=65535)
    checks.optional_positive_int(grpc_port, "grpc_port", maximum=65535)
    checks.positive_number(poll_seconds, "poll_seconds", example="2")
    checks.positive_int(max_body_bytes, "max_body_bytes", minimum=MIN_BODY_BYTES)
    if not isinstance(host, str) or not host:
        raise TypeError(f"host must be a host name or address (e.g. 127.0.0.1); got {host!r}")
    repository = Repository(os.fspath(base_dir))
    rest_server = RestServer(repository, host, port, max_body_bytes)
    try:
        grpc_server = start_grpc(repository, host, grpc_port) if grpc_port else None
    except BaseException:
        rest_server.server_close()
        raise
    for change in repository.scan():
        logger.info("serving %s", change)
    if not repository.models:
        logger.info("no exported models in %s yet; watching for them", base_dir)
    repository.watch(poll_seconds)
    logger.info("REST on http://%s:%s/v1/models/<name>:predict%s", host, port,
                f", gRPC on {host}:{grpc_port}" if grpc_port else "")
    try:
        rest_server.serve_forever()
    finally:
        rest_server.server_close()
        if grpc_server is not None:
            grpc_server.stop(grace=1)


def start_grpc(repository, host, port):
    """Starts TF Serving's PredictionService and ModelService on ``host:port``; returns it."""
    import concurrent.futures

    import grpc
    from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

    from keras_resnet.serving import grpc_services

    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8),
                         options=[("grpc.max_receive_message_length", MAX_BODY_BYTES),
                                  ("grpc.max_send_message_length", MAX_BODY_BYTES),
                                  ("grpc.so_reuseport", 0)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        grpc_services.PredictionService(repository), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(
        grpc_services.ModelService(repository), server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise AddressError("grpc_port", f"{port} cannot be bound on {host} (in use, or not an "
                                        "address of this machine)")
    server.start()
    return server
