"""One training process of the multi-worker tests: ``python tests/distribute_worker.py JSON``.

Trains a CIFAR ResNet-8 (sync BN) on the first images of scikit-learn's digits, in order (no
shuffling, no augmentation), with ``keras_resnet.distribute.fit`` under the strategy named in
the JSON (``TF_CONFIG`` from the environment for ``multi-worker``), or with Keras' own
``Model.fit`` on one device (``"engine": "keras"``): the reference. Writes the final weights,
the optimizer's step and learning rate to ``out`` (an .npz outside the run directory).
"""

import json
import sys
import time

settings = json.loads(sys.argv[1])

from keras_resnet.distribute import make_strategy  # noqa: E402

# The strategy first: MultiWorkerMirroredStrategy must exist before any other TF op.
strategy, description = make_strategy(settings["strategy"],
                                      collective_timeout=settings.get("timeout", 60.0))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from keras_resnet import distribute  # noqa: E402
from keras_resnet.modeling.models import CifarResNet  # noqa: E402
from keras_resnet.modeling.recipe import PaperSchedule, compile_model  # noqa: E402

BATCH = settings.get("batch_size", 32)
digits = load_digits()
IMAGES = (digits.images[..., None] * (255.0 / 16.0) / 255.0).astype("float32")
LABELS = digits.target.astype("int32")


def train_fn(context):
    data = tf.data.Dataset.from_tensor_slices((IMAGES, LABELS))
    data = data.shard(context.num_input_pipelines, context.input_pipeline_id)
    return data.batch(context.get_per_replica_batch_size(BATCH))


def validation_fn(context):
    data = tf.data.Dataset.from_tensor_slices((IMAGES[-256:], LABELS[-256:]))
    data = data.shard(context.num_input_pipelines, context.input_pipeline_id)
    return data.batch(context.get_per_replica_batch_size(BATCH))


keras.utils.set_random_seed(0)
steps, epochs = settings.get("steps", 3), settings.get("epochs", 1)
total_steps = steps * epochs
with strategy.scope():
    model = CifarResNet(8, input_shape=(8, 8, 1), classes=10)
    model = distribute.synchronize_batch_norm(model)
    schedule = PaperSchedule(0.1, total_steps)
    compile_model(model, learning_rate=schedule, jit_compile=False)

if settings.get("engine") == "keras":
    data = tf.data.Dataset.from_tensor_slices((IMAGES, LABELS)).batch(BATCH).repeat()
    model.fit(data, epochs=epochs, steps_per_epoch=steps, verbose=0, shuffle=False)
else:
    with distribute.worker_dir(settings["run_dir"], description["is_chief"]) as directory:
        print("writing to", directory, flush=True)
        callbacks = [
            keras.callbacks.CSVLogger(f"{directory}/history.csv", append=True),
            keras.callbacks.BackupAndRestore(f"{directory}/backup"),
            keras.callbacks.ModelCheckpoint(f"{directory}/best.keras", monitor="val_accuracy",
                                            mode="max", save_best_only=True),
            keras.callbacks.TensorBoard(f"{directory}/logs", write_graph=False,
                                        profile_batch=0),
            keras.callbacks.TerminateOnNaN(),
        ]
        if settings.get("sleep"):  # a test kills a worker in the middle of the run
            callbacks.append(keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: print("epoch", epoch, flush=True)
                or time.sleep(settings["sleep"])))
        distribute.fit(model, strategy, train_fn, epochs=epochs, steps_per_epoch=steps,
                       validation_fn=validation_fn, validation_steps=2, callbacks=callbacks,
                       verbose=0)
    # Every worker evaluates its shard of the held-out images; only the chief saves and exports.
    test = distribute.evaluate(model, strategy, validation_fn, steps=2)
    print("test", json.dumps(test), flush=True)
    if description["is_chief"] and settings.get("export_dir"):
        from keras_resnet.export import export_saved_model

        model.save(f"{settings['run_dir']}/model.keras")
        export_saved_model(model, base_dir=settings["export_dir"], name="digits",
                           class_names=[str(i) for i in range(10)], warmup_batch_sizes=[1])
step = int(model.optimizer.iterations.numpy())
np.savez(settings["out"], *model.get_weights(), step=step,
         learning_rate=float(schedule(step)), description=json.dumps(description))
print("done", json.dumps(description), flush=True)
