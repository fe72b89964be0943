"""A training run for tests/test_resume_position.py: `train` on a directory of TFRecord shards
whose image i is a constant image of value i, with a model that appends the record ids of every
batch it trains on to a log file (one line per step) and sleeps a little per step, so the test
can SIGKILL it mid-epoch.

Usage: python position_worker.py DATA OUT NAME LOG [augment]

With ``augment`` the training images get the random-resized crop and flip (the ids it logs are
then no ids: the test compares the weights instead).
"""

import logging
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from keras_resnet.data import load_dataset
from keras_resnet.training import train

DATA_OPTIONS = dict(num_classes=3, label_offset=0, image_size=4, augment=False,
                    crop_fraction=1.0, shuffle_buffer=8)
AUGMENTED_OPTIONS = dict(DATA_OPTIONS, augment=True, crop="inception")
STEP_SECONDS = 0.12


class RecordBatches(keras.layers.Layer):
    """Identity; in training, logs the batch's record ids (undoing the normalization)."""

    def __init__(self, log, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.log, self.mean, self.std = log, float(mean), float(std)

    def call(self, x, training=None):
        if not training:
            return x

        def write(values):
            ids = np.rint(values.numpy() * self.std + self.mean).astype(int)
            descriptor = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            os.write(descriptor, (" ".join(map(str, ids)) + "\n").encode())
            os.close(descriptor)
            time.sleep(STEP_SECONDS)
            return np.float32(0)

        token = tf.py_function(write, [x[:, 0, 0, 0]], Tout=tf.float32)
        token.set_shape(())
        return x + tf.cast(token, x.dtype) * 0


def main(data, out, name, log, mode=""):
    options = AUGMENTED_OPTIONS if mode == "augment" else DATA_OPTIONS
    keras.utils.set_random_seed(0)  # the same initial weights in every run
    stats = load_dataset(data, batch_size=4, **options)
    inputs = keras.Input(stats.input_shape)
    x = RecordBatches(log, stats.mean[0], np.sqrt(stats.variance[0]))(inputs)
    outputs = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs, name="logger")
    train(model, data, epochs=3, batch_size=4, backup_every_steps=2, out_dir=out, name=name,
          export_dir=None, verbose=0, data_options=options, jit_compile=False)


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    main(*sys.argv[1:6])
