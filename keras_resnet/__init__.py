"""keras_resnet: residual networks for Keras 3 — blocks, models, training, tuning and export."""

import os as _os

# Keep TensorFlow's C++ start-up chatter (CUDA probing on CPU machines) out of the user's way.
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from keras_resnet.blocks import dense_residual_block, plain_block, residual_block  # noqa: E402
from keras_resnet.models import (CifarResNet, ResNet, ResNet18, ResNet34, ResNet50,  # noqa: E402
                                 ResNet101, ResNet152, build)
from keras_resnet.stats import model_stats, multiply_adds  # noqa: E402
from keras_resnet.diagnostics import (GradientFlowLogger, TrainingError,  # noqa: E402
                                      block_identity_errors, branch_ratios, gradient_flow,
                                      gradient_norms, plot_by_depth)
from keras_resnet.export import (ExportVerificationError, export_saved_model,  # noqa: E402
                                 verify_export)
from keras_resnet.fold import fold_batch_norm  # noqa: E402
from keras_resnet.data import Dataset, load_dataset  # noqa: E402
from keras_resnet.training import (PaperSchedule, PaperWarmup, TrainResult,  # noqa: E402
                                   build_model, compile_model, train)
from keras_resnet.tuning import HyperResNet, tune  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CifarResNet", "ResNet", "ResNet18", "ResNet34", "ResNet50", "ResNet101", "ResNet152",
    "build", "dense_residual_block", "fold_batch_norm", "model_stats", "multiply_adds", "plain_block",
    "residual_block",
    "Dataset", "PaperSchedule", "PaperWarmup", "TrainResult", "build_model", "compile_model",
    "load_dataset", "train",
    "ExportVerificationError", "export_saved_model", "verify_export",
    "HyperResNet", "tune",
    "GradientFlowLogger", "TrainingError", "block_identity_errors", "branch_ratios",
    "gradient_flow", "gradient_norms", "plot_by_depth",
]
