"""The try-it page ``keras-resnet serve`` shows at ``/``: the served models and versions, and a
drop zone that sends an image through the same REST API a client uses (``:predict`` with the
``serving_bytes`` signature). Plain HTML and JavaScript shipped as package data."""

from __future__ import annotations

import functools
import importlib.resources
import json

PAGE_PATHS = ("/", "/index.html")


@functools.lru_cache(maxsize=1)
def _template() -> str:
    return importlib.resources.files("keras_resnet.serving").joinpath(
        "static", "try.html").read_text(encoding="utf-8")


def page(repository) -> bytes:
    """The page with ``{model name: [served versions, newest first]}`` filled in."""
    with repository.lock:
        models = {name: sorted(versions, reverse=True)
                  for name, versions in sorted(repository.models.items())}
    # "<" escaped: a model name cannot end the <script> element it is embedded in
    data = json.dumps(models).replace("<", "\\u003c")
    return _template().replace("__MODELS__", data).encode("utf-8")
