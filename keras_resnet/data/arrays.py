"""The small, bounded sources held in memory: digits (embedded), CIFAR-10, synthetic images.

They are small enough that holding the decoded arrays is a win (CIFAR-10's 50,000 images are
150 MiB as uint8). Training reads them through a ``position.TrainOrder``: epoch ``e`` is a stateless
permutation of the sample indices keyed by ``(seed, e)``, each sample gathered from the arrays
(nothing copied per epoch, no shuffle buffer), so a run killed inside an epoch resumes after its
last backed-up batch. The paper's augmentation (zero padding + random crop, optional horizontal
flip) runs per image in the training pipeline, never inside the model; its random draws are keyed
by ``(seed, epoch, sample)`` too (``keyed_augmentation``).
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from keras_resnet.data.dataset import DataError, Dataset
from keras_resnet.data.options import LoadOptions

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# The official archive's sha256 (the one keras.datasets.cifar10 checks). Keras' cache name is
# reused, so an archive that keras.datasets.cifar10 already fetched is found here too.
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_CACHE_NAME = "cifar-10-batches-py-target"
# Default augmentation per source: (zero padding in pixels, horizontal flip).
_AUGMENTATION = {"digits": (1, False), "cifar10": (4, True)}


def load_arrays(name: str, options: LoadOptions) -> Dataset:
    """``"digits"``, ``"cifar10"`` or ``"synthetic"`` as a ``Dataset`` (see ``load_dataset``)."""
    if name == "digits":
        arrays = _split(*_digits(), options.test_split, options.validation_split, options.seed)
        class_names = tuple(str(d) for d in range(10))
    elif name == "cifar10":
        (x_train, y_train), (x_test, y_test) = _cifar10(options.cache_dir)
        x_train, y_train, x_val, y_val = _holdout(x_train, y_train, options.validation_split,
                                                  options.seed)
        arrays = (x_train, y_train, x_val, y_val, x_test, y_test)
        class_names = CIFAR10_CLASSES
    else:
        num_classes = options.num_classes or 10
        images, labels = _synthetic(options.image_size or (32, 32), num_classes,
                                    options.num_examples, options.seed)
        arrays = _split(images, labels, options.test_split, options.validation_split,
                        options.seed, stratify=False)
        class_names = tuple(f"class_{i}" for i in range(num_classes))
    return _dataset(name, arrays, class_names, options)


def _dataset(name, arrays, class_names, options):
    import tensorflow as tf

    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    if len(x_train) == 0 or len(x_test) == 0:
        raise DataError(f"data {name!r}: the split left {len(x_train)} training and "
                        f"{len(x_test)} test images; lower test_split/validation_split or use "
                        "more data")
    augmentation = augmentation_options(name, x_train.shape[1:], options)
    mean = x_train.astype("float64").mean(axis=(0, 1, 2))
    variance = x_train.astype("float64").var(axis=(0, 1, 2))

    def pipeline(x, y):
        source = tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))
        return _pipeline(source, options)

    order = train_order(x_train, y_train, options, augmentation)
    return Dataset(
        name=name, train=order.pipeline(), train_order=order,
        validation=pipeline(x_val, y_val) if len(x_val) else None,
        test=pipeline(x_test, y_test),
        class_names=tuple(class_names), input_shape=tuple(int(s) for s in x_train.shape[1:]),
        num_classes=len(class_names), train_size=len(x_train), validation_size=len(x_val),
        test_size=len(x_test), batch_size=options.batch_size, mean=tuple(map(float, mean)),
        variance=tuple(map(float, variance)), augmentation=augmentation)


def augmentation_layers(input_shape, padding, flip, seed=0):
    """The paper's augmentation as Keras layers: zero padding, random crop back, optional flip.

    Args:
        input_shape: ``(height, width, channels)`` of one image.
        padding: zero padding in pixels on every side (0: no crop either).
        flip: random horizontal flips.
        seed: seed of the random layers.

    Returns:
        A function ``augment(image) -> image`` for one (unbatched) image, using ``tf.pad``,
        ``keras.layers.RandomCrop`` and ``RandomFlip``; it draws a new crop and flip per image
        (``RandomCrop`` draws one offset per call, so batches would share it). The padding is
        TensorFlow's own op because Keras' ``ZeroPadding2D`` runs the Keras backend's ops, which
        cannot run inside a ``tf.data`` map on JAX; the two random layers switch to TensorFlow
        inside ``tf.data`` on every backend.
    """
    import keras
    import tensorflow as tf

    height, width = int(input_shape[0]), int(input_shape[1])
    paddings = [[padding, padding], [padding, padding], [0, 0]]
    pad = (lambda image: tf.pad(image, paddings)) if padding else None
    crop = keras.layers.RandomCrop(height, width, seed=seed) if padding else None
    mirror = keras.layers.RandomFlip("horizontal", seed=seed + 1) if flip else None

    def augment(image):
        if pad is not None:
            image = crop(pad(image), training=True)
        if mirror is not None:
            image = mirror(image, training=True)
        return image

    return augment


def augmentation_options(name, shape, options: LoadOptions):
    """The paper's pad-and-crop augmentation for ``name`` (None when ``augment`` is off)."""
    if not options.augment:
        return None
    default_padding, default_flip = _AUGMENTATION.get(name, (max(1, int(shape[0]) // 8), True))
    result = {"padding": default_padding if options.padding is None else options.padding,
              "flip": default_flip if options.flip is None else options.flip}
    return result if result["padding"] or result["flip"] else None


def keyed_augmentation(input_shape, padding, flip):
    """The paper's augmentation with its random draws keyed by the caller: zero padding, a
    random crop back to the image's size, optional horizontal flip.

    Args:
        input_shape: ``(height, width, channels)`` of one image.
        padding: zero padding in pixels on every side (0: no crop either).
        flip: random horizontal flips.

    Returns:
        ``augment(image, key) -> image`` for one (unbatched) image and an int64 ``[2]`` key:
        TensorFlow's stateless ``tf.image.stateless_random_crop`` and
        ``stateless_random_flip_left_right``, so an image's crop and flip are a function of
        ``key`` alone (the same in a resumed epoch, whatever the map's parallelism).
    """
    import tensorflow as tf

    shape = [int(side) for side in input_shape]
    paddings = [[padding, padding], [padding, padding], [0, 0]]

    def augment(image, key):
        crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
        if padding:
            image = tf.image.stateless_random_crop(tf.pad(image, paddings), shape, crop_key)
        if flip:
            image = tf.image.stateless_random_flip_left_right(image, flip_key)
        return image

    return augment


def train_order(x, y, options: LoadOptions, augmentation=None):
    """The training pipeline of in-memory arrays as a ``position.TrainOrder``.

    Epoch ``e`` is a stateless permutation, keyed by ``(seed, e)``, of this input pipeline's
    sample indices (``Dataset.shard``'s split under ``options.input_context``); each index is
    gathered from the arrays (held once, as tensors on the CPU), cast to float32 and augmented
    with a key of ``(seed, e, index)``. A resumed epoch skips the indices of the batches done.

    Args:
        x, y: the training images ``(n, height, width, channels)`` and integer labels.
        options: the validated load options.
        augmentation: ``{"padding": P, "flip": F}`` or None.

    Returns:
        The ``keras_resnet.data.position.TrainOrder``.
    """
    import tensorflow as tf

    from keras_resnet.data import position

    context = options.input_context
    pipelines, pipeline = ((1, 0) if context is None else
                           (context.num_input_pipelines, context.input_pipeline_id))
    mine = np.arange(pipeline, len(x), pipelines, dtype="int64")  # Dataset.shard's split
    batch = options.per_replica_batch_size()
    with tf.device("/cpu:0"):
        images, labels = tf.constant(x), tf.constant(np.asarray(y, "int32"))
    augment = (keyed_augmentation(x.shape[1:], augmentation["padding"], augmentation["flip"])
               if augmentation else None)

    def build(epochs, skip_batches):
        def one_epoch(epoch, epoch_seed):
            order = position.permuted(mine, options.seed, epoch)
            return tf.data.Dataset.from_tensor_slices(order).skip(skip_batches * batch).map(
                lambda index: (index, epoch_seed))

        return position.per_epoch(epochs, options.seed, one_epoch)

    def load(index, epoch_seed):
        image = tf.cast(tf.gather(images, index), tf.float32)
        if augment is not None:  # key [epoch seed, index + 1]: never the permutation's [., 0]
            image = augment(image, tf.stack([epoch_seed, index + 1]))
        return image, tf.gather(labels, index)

    def finish(indices):
        dataset = indices.map(load, num_parallel_calls=tf.data.AUTOTUNE,
                              deterministic=options.is_deterministic(True))
        return dataset.batch(batch).prefetch(tf.data.AUTOTUNE)

    return position.TrainOrder(build, finish, -(-len(mine) // batch))


def shard(dataset, options: LoadOptions):
    """This input pipeline's share of ``dataset`` under ``options.input_context``."""
    context = options.input_context
    if context is None or context.num_input_pipelines == 1:
        return dataset
    return dataset.shard(context.num_input_pipelines, context.input_pipeline_id)


def _pipeline(dataset, options):
    """The evaluation pipelines: shard -> cache -> float32 -> batch -> prefetch."""
    import tensorflow as tf

    dataset = shard(dataset, options).cache()
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y),
                          num_parallel_calls=tf.data.AUTOTUNE,
                          deterministic=options.is_deterministic(False))
    return dataset.batch(options.per_replica_batch_size()).prefetch(tf.data.AUTOTUNE)


def _split(images, labels, test_split, validation_split, seed, stratify=True):
    from sklearn.model_selection import train_test_split

    if test_split == 0:
        raise ValueError("test_split must be > 0 for this data set (it has no separate test "
                         "set); got 0")
    x_rest, x_test, y_rest, y_test = train_test_split(
        images, labels, test_size=test_split, random_state=seed,
        stratify=labels if stratify and _stratifiable(labels, test_split) else None)
    x_train, y_train, x_val, y_val = _holdout(x_rest, y_rest, validation_split, seed,
                                              stratify=stratify)
    return x_train, y_train, x_val, y_val, x_test, y_test


def _holdout(images, labels, fraction, seed, stratify=True):
    from sklearn.model_selection import train_test_split

    if fraction == 0 or len(images) < 2:
        return images, labels, images[:0], labels[:0]
    x_train, x_val, y_train, y_val = train_test_split(
        images, labels, test_size=fraction, random_state=seed + 1,
        stratify=labels if stratify and _stratifiable(labels, fraction) else None)
    return x_train, y_train, x_val, y_val


def _stratifiable(labels, fraction):
    """Whether every class can be in both parts (else the split is simply random)."""
    counts = np.bincount(labels)
    classes = int((counts > 0).sum())
    held = int(np.ceil(fraction * len(labels)))
    return counts[counts > 0].min() >= 2 and held >= classes and len(labels) - held >= classes


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype("float32")[..., None]
    return images, digits.target.astype("int32")


class _CifarUnpickler(pickle.Unpickler):
    """Reads the official CIFAR-10 batches (dicts of bytes, lists and numpy arrays) and nothing
    else: a pickle can run any global it names, so only numpy's array constructors and the
    ``_codecs.encode`` that Python 2 pickles of byte strings use are allowed."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"CIFAR-10 batch names a forbidden global "
                                         f"{module}.{name}")
        return super().find_class(module, name)


def _read_cifar_batch(path):
    with open(path, "rb") as stream:
        batch = _CifarUnpickler(stream, encoding="bytes").load()
    data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
    return data.transpose(0, 2, 3, 1), np.asarray(batch[b"labels"], dtype="int32")


def _cifar10(cache_dir):
    """CIFAR-10 arrays from Keras' cache, downloading (and checking the sha256) when absent."""
    import keras

    try:
        folder = keras.utils.get_file(fname=CIFAR10_CACHE_NAME, origin=CIFAR10_URL,
                                      extract=True, file_hash=CIFAR10_SHA256,
                                      cache_dir=cache_dir)
    except Exception as error:  # get_file raises a bare Exception for a failed download
        raise DataError(f"CIFAR-10 is not in Keras' cache with the official sha256 and could "
                        f"not be downloaded: {error}") from None
    folder = os.path.join(folder, "cifar-10-batches-py")

    def read(filename):
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            raise DataError(f"CIFAR-10 archive in {os.path.dirname(folder)!r} lacks {filename!r}; "
                            "delete the cached files to download it again")
        return _read_cifar_batch(path)

    batches = [read(f"data_batch_{i}") for i in range(1, 6)]
    x_train = np.concatenate([b[0] for b in batches])
    y_train = np.concatenate([b[1] for b in batches])
    return (x_train, y_train), read("test_batch")


def _synthetic(image_size, num_classes, num_examples, seed):
    rng = np.random.default_rng(seed)
    patterns = rng.uniform(0, 255, size=(num_classes, *image_size, 3))
    labels = np.arange(num_examples) % num_classes
    rng.shuffle(labels)
    noise = rng.normal(0, 48, size=(num_examples, *image_size, 3))
    images = np.clip(patterns[labels] + noise, 0, 255).astype("uint8")
    return images, labels.astype("int32")
