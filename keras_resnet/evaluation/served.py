"""``evaluate(..., server=URL)``: the served model's probabilities beside the local ones, through
``keras_resnet.serving``'s client (REST, or gRPC with ``grpc``)."""

from __future__ import annotations

import numpy as np

from keras_resnet.constants import IMAGES_INPUT, IMAGES_SIGNATURE


class ServedComparison:
    """Sends each batch to the server's ``serving_default`` signature and keeps the largest
    absolute difference between its ``probabilities`` and the local model's.

    A server whose input is uint8 gets the batch rounded to integers (as a client would send
    it); the local model then answers for those same pixels.
    """

    def __init__(self, url: str, model_name: str, grpc: str | None = None, version=None):
        from keras_resnet.serving import Client, ServingError

        self.client = Client(url, grpc_target=grpc)
        self.model_name, self.grpc, self.version = model_name, grpc, version
        self.max_abs_difference = 0.0
        self.images = 0
        try:
            dtypes = self.client.input_dtypes(model_name, IMAGES_SIGNATURE, version=version)
        except ServingError as error:
            raise ValueError(f"server={url!r}: {error}") from None
        self.dtype = np.dtype(next(iter(dtypes.values())) if dtypes else np.float32)

    def to_send(self, images):
        """The batch as the server's input dtype (uint8: rounded and clipped to 0..255)."""
        images = np.asarray(images)
        if self.dtype.kind in "iu":
            info = np.iinfo(self.dtype)
            return np.clip(np.rint(images), max(info.min, 0), min(info.max, 255)).astype(
                self.dtype)
        return images.astype(self.dtype)

    def compare(self, sent, local_probabilities) -> None:
        """Asks the server about ``sent`` and records the difference to ``local_probabilities``."""
        from keras_resnet.serving import ServingError

        try:
            if self.grpc:
                served = self.client.grpc_predict(self.model_name, {IMAGES_INPUT: sent},
                                                  signature_name=IMAGES_SIGNATURE,
                                                  version=self.version)["probabilities"]
            else:
                reply = self.client.predict(self.model_name, inputs=sent,
                                            signature_name=IMAGES_SIGNATURE, version=self.version)
                served = reply["outputs"]["probabilities"]
        except ServingError as error:
            where = f"grpc={self.grpc!r}" if self.grpc else f"server={self.client.url!r}"
            raise ValueError(f"{where}: {error}") from None
        difference = np.abs(np.asarray(served, np.float64) - local_probabilities)
        self.max_abs_difference = max(self.max_abs_difference, float(difference.max()))
        self.images += len(sent)

    def summary(self) -> dict:
        return {"url": self.client.url, "grpc": self.grpc, "model": self.model_name,
                "version": self.version, "images": self.images,
                "max_abs_difference": self.max_abs_difference}
