"""Talking to TF Serving, and a local stand-in for it.

- `Client` (`client`): TF Serving's REST API (``/v1/models/<name>[/versions/<v>|/labels/<l>]
  :predict`` in the ``instances`` and ``inputs`` forms, ``{"b64": ...}`` for bytes, status and
  metadata GETs) and its gRPC ``Predict``, ``GetModelMetadata`` and ``GetModelStatus``
  (``tensorflow-serving-api``). Inputs are cast to the signature's dtypes read from the metadata.
- `serve` (`server`): the latest version of every model in a ``saved_models`` directory behind
  TF Serving's REST API (`rest`) and, optionally, its gRPC API (`grpc_services`), bound to
  127.0.0.1; new, replaced and deleted versions are picked up without a restart. `repository`
  loads and runs the models the way TF Serving does. For local development and tests;
  production is TF Serving (see the ``docker-run.sh`` an export writes).
"""

from keras_resnet._tensorflow import require_tensorflow

require_tensorflow("serving (keras_resnet.serving: the TF Serving client and local server)")

from keras_resnet.serving.client import Client, ServingError
from keras_resnet.serving.repository import BadRequest, NotFound, Repository, ServingStatus
from keras_resnet.serving.server import AddressError, serve

__all__ = ["AddressError", "BadRequest", "Client", "NotFound", "Repository", "ServingError",
           "ServingStatus", "serve"]
