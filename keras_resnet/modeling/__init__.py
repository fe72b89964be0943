"""The backend-neutral storey: blocks, models, presets, looped stages, batch norm, weights, recipe.

Everything here runs on every Keras 3 backend and imports no TensorFlow and nothing from the
storey above it (data, training, tuning, export, serving, diagnostics, distribute, cli); the
layering contract in ``pyproject.toml`` (``import-linter``) holds it to that. Submodules import
their siblings directly, never this facade.
"""

from keras_resnet.modeling.block_options import BlockOptions
from keras_resnet.modeling.blocks import (ZeroPadShortcut, dense_residual_block, plain_block,
                                          residual_block)
from keras_resnet.modeling.checkpoints import (TORCH_MEAN, TORCH_STD, caffe_preprocessing,
                                               from_torch_checkpoint, torch_preprocessing)
from keras_resnet.modeling.folding import FoldedBatchNorm, fold_batch_norm
from keras_resnet.modeling.fused_batch_norm import FusedBatchNormalization
from keras_resnet.modeling.looped_stages import RepeatedBlocks
from keras_resnet.modeling.models import (CifarResNet, ResNet, ResNet18, ResNet34, ResNet50,
                                          ResNet101, ResNet152, build)
from keras_resnet.modeling.recipe import PaperSchedule, PaperWarmup, build_model, compile_model
from keras_resnet.modeling.stage_conversion import convert_stages, transfer_weights
from keras_resnet.modeling.state_dict import read_state_dict
from keras_resnet.modeling.stats import model_stats, multiply_adds
from keras_resnet.modeling.torch_architecture import TorchResNet, infer_architecture
from keras_resnet.modeling.torch_weights import (LoadResult, load_state_dict, load_torch_weights,
                                                 torch_prefix)
from keras_resnet.modeling.weight_files import load_weights
from keras_resnet.constants import PREPROCESSINGS

__all__ = ["BlockOptions", "CifarResNet", "FoldedBatchNorm", "FusedBatchNormalization",
           "LoadResult", "PREPROCESSINGS", "PaperSchedule", "PaperWarmup", "RepeatedBlocks",
           "ResNet", "ResNet101", "ResNet152", "ResNet18", "ResNet34", "ResNet50", "TORCH_MEAN",
           "TORCH_STD", "TorchResNet", "ZeroPadShortcut", "build", "build_model",
           "caffe_preprocessing", "compile_model", "convert_stages", "dense_residual_block",
           "fold_batch_norm", "from_torch_checkpoint", "infer_architecture", "load_state_dict",
           "load_torch_weights", "load_weights", "model_stats", "multiply_adds", "plain_block",
           "read_state_dict", "residual_block", "torch_preprocessing", "torch_prefix",
           "transfer_weights"]
