"""SavedModel export for TF Serving: signatures, versioned bundle, configs, warmup, verification.

``export_saved_model(model, base_dir, name, version, class_names, **options)`` writes
``base_dir/<name>/<version>/`` atomically with the serving signatures (`signatures`), warmup
requests and reference outputs (`warmup`) and the serving files around it (`deployment`,
`bundle`, `layout`); ``verify_export(path)`` loads it the way TF Serving does in a
TensorFlow-only process (`verify`).
"""

from keras_resnet._tensorflow import require_tensorflow

require_tensorflow("export (keras_resnet.export: SavedModel and TF Serving files)")

from keras_resnet.constants import BYTES_INPUT, BYTES_SIGNATURE, IMAGES_INPUT, IMAGES_SIGNATURE
from keras_resnet.export.bundle import export_saved_model, find_xla_attributes
from keras_resnet.export.deployment import write_batching_parameters, write_models_config
from keras_resnet.export.layout import model_names, versions
from keras_resnet.export.signatures import ServingSpec, make_spec
from keras_resnet.export.verify import ExportVerificationError, verify_export

__all__ = [
    "BYTES_INPUT", "BYTES_SIGNATURE", "ExportVerificationError", "IMAGES_INPUT",
    "IMAGES_SIGNATURE", "ServingSpec", "export_saved_model", "find_xla_attributes", "make_spec",
    "model_names", "verify_export", "versions", "write_batching_parameters",
    "write_models_config",
]
