"""How ``train`` fits under a ``tf.distribute`` strategy (``keras_resnet.distribute``).

One device and ``MirroredStrategy`` train with Keras' own ``model.fit``; under
``MultiWorkerMirroredStrategy``, where Keras 3's ``fit`` fails (keras-team/keras#20585), each
worker loads its own shard of the data and ``keras_resnet.distribute.fit`` runs the compiled
model's ``train_step`` with ``strategy.run``. Only the chief writes the run directory; the other
workers' callbacks write to a temporary directory that is removed afterwards.
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


def fit(config, model, dataset, strategy, distribution, callbacks, steps) -> dict:
    """Fits ``model`` for ``config.epochs``; returns the test metrics (all-reduced over the
    workers of a multi-worker run)."""
    from keras_resnet import distribute
    from keras_resnet.data import explain_errors, position

    if not is_multi_worker(distribution):
        with explain_errors(dataset):
            # model.fit, resuming a killed epoch after its last backed-up batch
            position.fit(model, dataset, epochs=config.epochs, callbacks=callbacks,
                         verbose=config.verbose)
            return model.evaluate(dataset.test, verbose=0, return_dict=True)
    with explain_errors(dataset):  # a bad record or label: one line naming the shard
        shard = functools.partial(_load_shard, config, dataset.batch_size)
        workers = distribution["workers"]
        validation = (None if dataset.validation is None
                      else lambda context: shard(context).validation)
        replicas = strategy.num_replicas_in_sync
        distribute.fit(model, strategy, lambda context: shard(context).train,
                       epochs=config.epochs, steps_per_epoch=steps, validation_fn=validation,
                       validation_steps=distribute.steps_for(dataset.validation_size,
                                                             dataset.batch_size, workers,
                                                             replicas),
                       callbacks=callbacks, verbose=config.verbose)
        return distribute.evaluate(model, strategy, lambda context: shard(context).test,
                                   steps=distribute.steps_for(dataset.test_size,
                                                              dataset.batch_size, workers,
                                                              replicas))


def _load_shard(config, batch_size, context):
    from keras_resnet.data import load_dataset

    return load_dataset(config.data, batch_size=batch_size, seed=config.seed,
                        input_context=context, **config.data_options)
