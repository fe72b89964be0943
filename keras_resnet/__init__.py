"""keras_resnet: residual networks for Keras 3 — blocks, models, training, tuning and export.

The modules that register Keras serializables (the custom layers, the learning-rate schedule
and the loss) are imported together with Keras: at once when Keras is already imported, else
right after Keras' own import, so ``keras.models.load_model`` reads any keras_resnet ``.keras``
file after a plain ``import keras_resnet`` while the package import itself (and with it the
command line's ``--help``) loads neither Keras nor TensorFlow. The other public names are
imported on first use (PEP 562).

The package import and the modelling core (blocks, models, presets, stats, folding, the recipe's
compile/fit pieces, ``.safetensors`` checkpoints) need no TensorFlow and run on every Keras
backend; the TensorFlow-only subpackages (data, training, tuning, export, serving, diagnostics)
raise ``keras_resnet._tensorflow.TensorFlowRequired`` naming the extra to install.
"""

import importlib as _importlib
import importlib.util as _importlib_util
import sys as _sys

__version__ = "0.1.0"


class _RegisterWithKeras:
    """A one-shot import hook: once ``keras`` has been imported, imports
    ``keras_resnet.modeling``, which registers ZeroPadShortcut, RepeatedBlocks,
    FusedBatchNormalization, FoldedBatchNorm, PaperSchedule and the loss with Keras.

    Safe inside our own imports: modeling imports nothing above it, so when a module of
    modeling is the one importing Keras the package is returned half-built and finishes itself.
    """

    finding = False

    def find_spec(self, fullname, path=None, target=None):
        # importlib.util.find_spec("keras") asks too and loads nothing: the hook stays until
        # Keras is really imported.
        if fullname != "keras" or self.finding:
            return None
        self.finding = True
        try:
            spec = _importlib_util.find_spec("keras")
        finally:
            self.finding = False
        if spec is not None and spec.loader is not None:
            run = spec.loader.exec_module

            def exec_then_register(module):
                if self in _sys.meta_path:
                    _sys.meta_path.remove(self)
                run(module)
                _importlib.import_module("keras_resnet.modeling")

            spec.loader.exec_module = exec_then_register
        return spec


if "keras" in _sys.modules:
    import keras_resnet.modeling  # noqa: F401  (registers the serializables now)
elif not any(isinstance(finder, _RegisterWithKeras) for finder in _sys.meta_path):
    _sys.meta_path.insert(0, _RegisterWithKeras())

# public name -> the module that defines it
_EXPORTS = {
    "keras_resnet.modeling": ("BlockOptions", "CifarResNet", "PaperSchedule", "PaperWarmup",
                              "ResNet", "ResNet18", "ResNet34", "ResNet50", "ResNet101",
                              "ResNet152", "build", "build_model", "compile_model",
                              "convert_stages", "dense_residual_block", "fold_batch_norm",
                              "from_torch_checkpoint", "load_torch_weights", "model_stats",
                              "multiply_adds", "plain_block", "residual_block"),
    "keras_resnet.data": ("Dataset", "load_dataset"),
    "keras_resnet.training.fine_tuning": ("fine_tune",),
    "keras_resnet.training": ("TrainConfig", "TrainResult", "train"),
    "keras_resnet.evaluation.evaluator": ("evaluate",),
    "keras_resnet.export": ("ExportVerificationError", "export_saved_model", "verify_export"),
    "keras_resnet.tuning": ("HyperResNet", "TuneConfig", "tune"),
    "keras_resnet.diagnostics": ("GradientFlowLogger", "TrainingError", "block_identity_errors",
                                 "branch_ratios", "gradient_flow", "gradient_norms",
                                 "plot_by_depth"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'keras_resnet' has no attribute {name!r}")
    value = getattr(_importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
