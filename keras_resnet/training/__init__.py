"""Training runs: ``train`` (``run.py``), its ``TrainConfig`` (``config.py``), the named recipes
(``recipe_options.py``), the one resuming fit and the run's callbacks (``fitting.py``), the end
of a run: metrics, saved model, curves, export (``outcome.py``), fine-tuning pretrained weights
(``fine_tuning.py``) and the run's history files (``history.py``). The recipe's Keras pieces
(``PaperSchedule``, ``PaperWarmup``, ``compile_model``, ``build_model``, the loss) live in
``keras_resnet.modeling.recipe``.
"""

from keras_resnet._tensorflow import require_tensorflow

require_tensorflow("training runs (keras_resnet.train: tf.data input, run directory, export)")

from keras_resnet.training.config import TrainConfig, make_reproducible
from keras_resnet.training.history import plot_history, read_history
from keras_resnet.training.recipe_options import resolve_recipe
from keras_resnet.training.outcome import TrainResult
from keras_resnet.training.run import train

__all__ = ["TrainConfig", "TrainResult", "make_reproducible", "plot_history", "read_history",
           "resolve_recipe", "train"]
