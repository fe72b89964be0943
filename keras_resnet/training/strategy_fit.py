"""How ``train`` fits under a ``tf.distribute`` strategy (``keras_resnet.distribute``).

One device and ``MirroredStrategy`` train with Keras' own ``model.fit``; under
``MultiWorkerMirroredStrategy``, where Keras 3's ``fit`` fails (keras-team/keras#20585), each
worker loads its own shard of the data (``strategy_loop``) and the one resuming fit
(``keras_resnet.training.fitting.fit``) runs the compiled model's ``train_step`` with
``strategy.run`` (``keras_resnet.distribute.step_loop.run_loop``). Only the chief writes the
run directory; the other workers' callbacks write to a temporary directory that is removed
afterwards.
"""

from __future__ import annotations

import contextlib
import functools

from keras_resnet.training.run_files import RunFiles


def is_multi_worker(distribution) -> bool:
    return distribution["strategy"] == "multi-worker"


def steps_per_epoch(dataset, distribution) -> int:
    """Steps of one epoch: every worker of a multi-worker run takes whole global batches only,
    so that all of them run the same number of steps."""
    if is_multi_worker(distribution):
        return max(1, dataset.train_size // dataset.batch_size)
    return dataset.steps_per_epoch


def jit_compile(config):
    """``config.jit_compile``, with ``"auto"`` meaning XLA on the JAX backend: JAX without
    ``jit`` dispatches op by op (and its sharded collectives can stall on a small CPU)."""
    import keras

    if config.jit_compile == "auto" and keras.backend.backend() == "jax":
        return True
    return config.jit_compile


def learning_rate(config, dataset) -> float:
    """The initial rate used: ``learning_rate``, scaled linearly to the global batch when the
    run names the batch it was given for (``lr_batch_size``)."""
    if config.lr_batch_size is None:
        return config.learning_rate
    from keras_resnet.distribute import scaled_learning_rate

    return scaled_learning_rate(config.learning_rate, dataset.batch_size,
                                base_batch_size=config.lr_batch_size)


@contextlib.contextmanager
def worker_run_files(config, distribution):
    """The ``RunFiles`` this worker's callbacks write: the run's on the chief, else temporary."""
    from keras_resnet.distribute import worker_dir

    with worker_dir(config.run_dir, distribution["is_chief"]) as directory:
        yield RunFiles(directory)


def strategy_loop(config, dataset, strategy, distribution, steps):
    """The multi-worker loop's inputs (each worker loads its own shard), or None when Keras'
    ``model.fit`` trains (one machine)."""
    from keras_resnet import distribute
    from keras_resnet.training.fitting import StrategyLoop

    if not is_multi_worker(distribution):
        return None
    shard = functools.partial(_load_shard, config, dataset.batch_size)
    validation = (None if dataset.validation is None
                  else lambda context: shard(context).validation)
    return StrategyLoop(strategy, lambda context: shard(context).train, steps, validation,
                        distribute.steps_for(dataset.validation_size, dataset.batch_size,
                                             distribution["workers"],
                                             strategy.num_replicas_in_sync))


def evaluate_test(config, model, dataset, strategy, distribution) -> dict:
    """The test metrics of the fitted ``model`` (all-reduced over the workers of a
    multi-worker run)."""
    from keras_resnet import distribute

    from keras_resnet.data import explain_errors

    with explain_errors(dataset):  # a bad record or label: one line naming the shard
        if not is_multi_worker(distribution):
            return model.evaluate(dataset.test, verbose=0, return_dict=True)
        shard = functools.partial(_load_shard, config, dataset.batch_size)
        return distribute.evaluate(model, strategy, lambda context: shard(context).test,
                                   steps=distribute.steps_for(dataset.test_size,
                                                              dataset.batch_size,
                                                              distribution["workers"],
                                                              strategy.num_replicas_in_sync))


def _load_shard(config, batch_size, context):
    from keras_resnet.data import load_dataset

    return load_dataset(config.data, batch_size=batch_size, seed=config.seed,
                        input_context=context, **config.data_options)
