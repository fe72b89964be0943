"""`keras-resnet train` (the console script's ``main``) for tests/test_resume_memory.py, with
every training step logged: one line per step (the batch's labels and a hash of its augmented
images) appended to LOG, and a short sleep per step, so the test can SIGKILL it mid-epoch.

Usage: python memory_position_worker.py LOG [keras-resnet arguments...]
"""

import hashlib
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf

STEP_SECONDS = 0.1


def logged_train_step(log, train_step):
    """``train_step`` that first appends the batch it trains on to ``log`` (a ``py_function``:
    run with ``--jit-compile off``)."""

    def write(images, labels):
        digest = hashlib.sha1(np.ascontiguousarray(images.numpy()).tobytes()).hexdigest()[:16]
        line = f"{digest} {' '.join(map(str, labels.numpy().tolist()))}\n"
        descriptor = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        os.write(descriptor, line.encode())
        os.close(descriptor)
        time.sleep(STEP_SECONDS)
        return np.float32(0)

    def step(self, data):
        images, labels = data[0], data[1]
        token = tf.py_function(write, [images, labels], Tout=tf.float32)
        with tf.control_dependencies([token]):
            images = tf.identity(images)
        return train_step(self, (images, labels, *data[2:]))

    return step


if __name__ == "__main__":
    keras.Model.train_step = logged_train_step(sys.argv[1], keras.Model.train_step)
    from keras_resnet.cli import main

    sys.exit(main(sys.argv[2:]))
