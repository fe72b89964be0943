"""Talking to TF Serving, and a local stand-in for it.

- `Client` (`client`): TF Serving's REST API (``/v1/models/<name>[/versions/<v>]:predict`` in the
  ``instances`` and ``inputs`` forms, ``{"b64": ...}`` for bytes, status and metadata GETs) and
  its gRPC ``PredictionService.Predict`` (``tensorflow-serving-api``). REST needs only the
  standard library.
- `serve` (`server`): the latest version of every model in a ``saved_models`` directory behind
  KServe's Python model server (the ``serve`` extra) with TF Serving's REST shape, bound to
  127.0.0.1; new versions are picked up without a restart. `repository` holds the loaded models
  and checks requests against their signatures. For local development and tests; production is
  TF Serving (see the ``docker-run.sh`` an export writes).
"""

from keras_resnet.serving.client import Client, ServingError
from keras_resnet.serving.repository import BadRequest, NotFound, Repository
from keras_resnet.serving.server import serve

__all__ = ["BadRequest", "Client", "NotFound", "Repository", "ServingError", "serve"]
