"""KerasTuner search over ResNet depth and initializers: resumable and distributed.

* ``HyperResNet`` (``space.py``): the ``keras_tuner.HyperModel``.
* ``tune`` and ``TuneConfig`` (``search.py``, ``config.py``): the search, its
  ``results.csv``/``results.png`` and the export.
* ``tuner.py``: the configuration, data, hypermodel and tuner that the search and every trial
  process make alike; ``trial_process.py``: a trial process
  (``python -m keras_resnet.tuning.trial_process``).
* ``fresh.py``: trials in processes served by the tuner's (or the chief's) oracle, up to
  ``trials_per_process`` each (``trial_process="recycled"``, the default for data by name:
  flat tuner memory) or one each (``"fresh"``).
* ``chief_worker.py``: KerasTuner's chief/worker protocol with its hangs guarded;
  ``kt_internals.py``: the one place that uses KerasTuner's private API.
"""

from keras_resnet._tensorflow import require_tensorflow

require_tensorflow("tuning (keras_resnet.tuning, KerasTuner)")

from keras_resnet.constants import DEFAULT_MAX_TRIALS, TUNERS
from keras_resnet.constants import DEFAULT_TUNE_EPOCHS as DEFAULT_EPOCHS
from keras_resnet.tuning.config import TuneConfig
from keras_resnet.tuning.search import TuneResult, tune
from keras_resnet.tuning.tuner import objective_names
from keras_resnet.tuning.space import (ACTIVATIONS, CIFAR_DEPTHS, FAMILIES, INITIALIZERS,
                                       HyperResNet, layer_count)

__all__ = ["ACTIVATIONS", "CIFAR_DEPTHS", "DEFAULT_EPOCHS", "DEFAULT_MAX_TRIALS", "FAMILIES",
           "HyperResNet", "INITIALIZERS", "TUNERS", "TuneConfig", "TuneResult", "layer_count",
           "objective_names", "tune"]
