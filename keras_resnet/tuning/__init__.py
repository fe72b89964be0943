"""KerasTuner search over ResNet depth and initializers: resumable and distributed.

* ``HyperResNet`` (``space.py``): the ``keras_tuner.HyperModel``.
* ``tune`` (``search.py``): the search, its ``results.csv``/``results.png`` and the export.
* ``distributed.py``: KerasTuner's chief/worker protocol with its hangs guarded.
"""

from keras_resnet.tuning.search import (DEFAULT_EPOCHS, DEFAULT_MAX_TRIALS, TUNERS, TuneResult,
                                        objective_names, tune)
from keras_resnet.tuning.space import (ACTIVATIONS, CIFAR_DEPTHS, FAMILIES, INITIALIZERS,
                                       HyperResNet, layer_count)

__all__ = ["ACTIVATIONS", "CIFAR_DEPTHS", "DEFAULT_EPOCHS", "DEFAULT_MAX_TRIALS", "FAMILIES",
           "HyperResNet", "INITIALIZERS", "TUNERS", "TuneResult", "layer_count",
           "objective_names", "tune"]
