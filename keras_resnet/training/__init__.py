"""Training runs: ``train`` (``run.py``), its ``TrainConfig`` (``config.py``) and the run's
history files (``history.py``). The recipe's Keras pieces (``PaperSchedule``, ``PaperWarmup``,
``compile_model``, ``build_model``, the loss) live in ``keras_resnet.recipe``.
"""

from keras_resnet.training.config import TrainConfig, make_reproducible
from keras_resnet.training.history import plot_history, read_history
from keras_resnet.training.run import TrainResult, train

# Compatibility: these recipe names were reachable as keras_resnet.training.<name>, which
# keras_resnet.__init__'s lazy exports still point at; keras_resnet.recipe defines them.
from keras_resnet.recipe import PaperSchedule, PaperWarmup, build_model, compile_model

__all__ = ["PaperSchedule", "PaperWarmup", "TrainConfig", "TrainResult", "build_model",
           "compile_model", "make_reproducible", "plot_history", "read_history", "train"]
