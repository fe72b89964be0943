"""Training on several devices and machines with ``tf.distribute``.

* ``make_strategy(name)``: the strategy (``"auto"``, ``"one-device"``, ``"mirrored"``,
  ``"multi-worker"``) and a description for ``metrics.json``; ``TF_CONFIG`` is checked first.
* ``synchronize_batch_norm(model)``: cross-replica batch statistics (``--sync-bn``);
  ``replicate(model, strategy)``: a model built outside the strategy's scope, rebuilt in it.
* ``scaled_learning_rate``: the linear scaling rule for the global batch.
* ``fit(...)`` (``step_loop.run_loop``): a training loop over ``strategy.run`` driving the model's own ``train_step``
  and Keras callbacks, for ``MultiWorkerMirroredStrategy`` (Keras 3's ``fit`` fails under it,
  keras-team/keras#20585), and ``evaluate``; ``worker_dir`` keeps non-chief workers' files
  out of the run.
* ``manifest.tfjob_manifest(...)``: a Kubeflow ``TFJob`` (chief + workers, GPU requests, the
  shared volume) running ``keras-resnet train --strategy multi-worker``;
  ``keras-resnet manifest`` writes one.
"""

from keras_resnet.distribute.cluster import Cluster, read_cluster
from keras_resnet.distribute.strategy import (choose_strategy, describe, make_strategy,
                                              scaled_learning_rate)

__all__ = ["Cluster", "WorkerError", "choose_strategy", "describe", "evaluate",
           "explain_collective_errors", "fit", "make_strategy", "read_cluster", "replicate",
           "scaled_learning_rate", "steps_for", "synchronize_batch_norm", "worker_dir"]


def __getattr__(name):
    if name == "fit":  # the public name of the multi-worker loop
        from keras_resnet.distribute.step_loop import run_loop

        return run_loop
    if name in ("evaluate", "worker_dir", "WorkerError", "explain_collective_errors",
                "steps_for"):
        from keras_resnet.distribute import step_loop

        return getattr(step_loop, name)
    if name in ("synchronize_batch_norm", "replicate"):
        from keras_resnet.distribute import sync_bn

        return getattr(sync_bn, name)
    raise AttributeError(f"module 'keras_resnet.distribute' has no attribute {name!r}")
