"""Helpers the tests of servers and workers on 127.0.0.1 share."""

import io
import socket
import subprocess
import sys
import time

from PIL import Image

from keras_resnet.serving import Client, ServingError


def free_ports(count):
    """``count`` ports on 127.0.0.1 that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def png(pixels):
    """A grayscale PNG file's bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def start_server(base, model_name, *extra):
    """``keras-resnet serve base`` on two free ports; returns (process, log, client) once
    ``model_name`` answers."""
    port, grpc_port = free_ports(2)
    log = open(base / "server.log", "w")
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_resnet", "serve", str(base), "--port", str(port),
         "--grpc-port", str(grpc_port), "--poll-seconds", "0.25", *extra],
        stdout=log, stderr=subprocess.STDOUT)
    client = Client(f"http://127.0.0.1:{port}", grpc_target=f"127.0.0.1:{grpc_port}")
    deadline = time.monotonic() + 180
    while True:
        try:
            client.status(model_name)
            return process, log, client
        except ServingError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                log.close()
                raise RuntimeError("server did not start:\n" + (base / "server.log").read_text())
            time.sleep(0.25)


def stop_server(process, log):
    """Ends a server of ``start_server``."""
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
    log.close()
