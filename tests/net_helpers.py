"""Helpers the tests of servers and workers on 127.0.0.1 share."""

import io
import socket

from PIL import Image


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
