"""Data sets as ``tf.data`` pipelines: digits (embedded), CIFAR-10, image folders, synthetic.

``load_dataset`` returns a ``Dataset``: batched ``train`` / ``validation`` / ``test`` pipelines of
``(images, integer labels)`` plus metadata. Images are float32 *raw* pixel values (0..255);
normalization belongs to the model (``keras_resnet.training.build_model`` prepends a
``Normalization`` layer holding ``Dataset.mean`` / ``Dataset.variance``), so an exported model takes
raw pixels. The paper's augmentation (zero padding + random crop, optional horizontal flip) runs in
the training pipeline through Keras preprocessing layers, never inside the model.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

SOURCES = ("digits", "cifar10", "synthetic")
COLOR_MODES = ("rgb", "grayscale", "rgba")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                   "truck")
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
# The official archive's sha256 (the one keras.datasets.cifar10 checks). Keras' cache name is
# reused, so an archive that keras.datasets.cifar10 already fetched is found here too.
CIFAR10_SHA256 = "6d958be074577803d12ecdefd02955f39262c83c16fe9348329d7fe0b5c001ce"
CIFAR10_CACHE_NAME = "cifar-10-batches-py-target"
# Default augmentation per source: (zero padding in pixels, horizontal flip).
_AUGMENTATION = {"digits": (1, False), "cifar10": (4, True)}


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Batched ``tf.data`` pipelines and what a model needs to know about them.

    Attributes:
        name: ``"digits"``, ``"cifar10"``, ``"synthetic"`` or the folder's path.
        train: shuffled (every epoch), augmented, batched ``(images, labels)``.
        validation: batched ``(images, labels)`` held out from training, or None.
        test: batched ``(images, labels)``, never seen in training.
        class_names: one name per integer label.
        input_shape: ``(height, width, channels)`` of one image.
        num_classes: ``len(class_names)``.
        train_size, validation_size, test_size: images in each split.
        batch_size: images per batch.
        mean, variance: per-channel statistics of the training images (0..255 scale), for the
            model's ``Normalization`` layer.
        augmentation: ``{"padding": int, "flip": bool}`` applied to ``train``, or None.
    """

    name: str
    train: object
    validation: object
    test: object
    class_names: tuple
    input_shape: tuple
    num_classes: int
    train_size: int
    validation_size: int
    test_size: int
    batch_size: int
    mean: tuple
    variance: tuple
    augmentation: dict | None = None

    @property
    def steps_per_epoch(self):
        """Training batches per epoch."""
        return -(-self.train_size // self.batch_size)

    def describe(self):
        """One line: name, shape, classes and split sizes."""
        return (f"{self.name}: {self.train_size} train / {self.validation_size} validation / "
                f"{self.test_size} test images of {'x'.join(map(str, self.input_shape))}, "
                f"{self.num_classes} classes")


# ----------------------------------------------------------------------------- validation


def _positive_int(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{argument} must be a positive int; got {value!r}")
    return int(value)


def _fraction(value, argument):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{argument} must be a fraction in [0, 1); got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------- public API


def load_dataset(name_or_path="digits", *, batch_size=64, seed=0, validation_split=0.1,
                 test_split=0.2, augment=True, padding=None, flip=None, image_size=None,
                 color_mode=None, cache_dir=None, num_classes=10, num_examples=1000,
                 check_images=True):
    """Loads a data set as batched ``tf.data`` pipelines of raw float32 pixels and int labels.

    Sources:

    * ``"digits"`` (default): scikit-learn's bundled 8x8 handwritten digits (1,797 images,
      10 classes), offline; pixels 0..16 are scaled to 0..255. A stratified split from ``seed``
      holds out ``test_split`` for testing and ``validation_split`` of the rest for validation.
    * ``"cifar10"``: CIFAR-10 through ``keras.utils.get_file`` with the official URL and sha256,
      under Keras' cache (``$KERAS_HOME/datasets``, or ``cache_dir``), the same cache entry
      ``keras.datasets.cifar10`` uses: downloaded once, read offline afterwards. The official
      10,000 test images are the test split.
    * a directory with one sub-folder of images per class (``keras.utils
      .image_dataset_from_directory``; bmp, gif, jpeg, png). Every image is decoded once up
      front: a corrupt or unreadable file raises ``ValueError`` naming it, before any training
      (it is not skipped silently). ``image_size`` defaults to the first image's size and
      ``color_mode`` to grayscale when that image is single-channel, else rgb.
    * ``"synthetic"``: ``num_examples`` learnable images (a fixed random pattern per class plus
      noise) of ``image_size`` (default 32x32) with 3 channels, for smoke tests and benchmarks.

    Args:
        name_or_path: a source name above or a directory path.
        batch_size: images per batch.
        seed: fixes the split, the shuffling and the augmentation.
        validation_split: fraction of the non-test images held out for validation (0: none).
        test_split: fraction of all images held out for testing (digits, folders, synthetic;
            CIFAR-10 has its own test set).
        augment: augment the training pipeline (zero padding + random crop, optional flip).
        padding: zero padding in pixels before the random crop; default 1 for digits, 4 for
            CIFAR-10, an eighth of the image size otherwise (the paper's 4 on 32x32).
        flip: random horizontal flips; default False for digits (a flipped digit is another
            symbol), True otherwise.
        image_size: ``(height, width)`` for folders (images are resized) and synthetic data.
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"`` for folders.
        cache_dir: Keras cache directory for CIFAR-10 (default ``$KERAS_HOME``, ``~/.keras``).
        num_classes: classes of the synthetic data.
        num_examples: images of the synthetic data.
        check_images: decode every image of a folder up front (see above).

    Returns:
        A ``Dataset``.

    Raises:
        ValueError: for an unknown source, an empty or corrupt folder, or a bad argument.
    """
    batch_size = _positive_int(batch_size, "batch_size")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0; got {seed!r}")
    validation_split = _fraction(validation_split, "validation_split")
    test_split = _fraction(test_split, "test_split")
    if padding is not None and (isinstance(padding, bool) or not isinstance(padding, int)
                                or padding < 0):
        raise ValueError(f"padding must be an int >= 0 (pixels) or None; got {padding!r}")
    if flip is not None and not isinstance(flip, bool):
        raise TypeError(f"flip must be True, False or None; got {flip!r}")
    if image_size is not None:
        if isinstance(image_size, int):
            image_size = (image_size, image_size)
        if (not isinstance(image_size, (tuple, list)) or len(image_size) != 2
                or any(isinstance(s, bool) or not isinstance(s, int) or s < 1
                       for s in image_size)):
            raise ValueError(f"image_size must be (height, width) of positive ints; "
                             f"got {image_size!r}")
        image_size = tuple(image_size)
    if color_mode is not None and color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {COLOR_MODES} or None; got {color_mode!r}")
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"name_or_path must be a data set name or a directory path; "
                        f"got {name_or_path!r}")

    name = os.fspath(name_or_path)
    if name == "digits":
        arrays = _split(*_digits(), test_split, validation_split, seed)
        class_names = tuple(str(d) for d in range(10))
    elif name == "cifar10":
        (x_train, y_train), (x_test, y_test) = _cifar10(cache_dir)
        x_train, y_train, x_val, y_val = _holdout(x_train, y_train, validation_split, seed)
        arrays = (x_train, y_train, x_val, y_val, x_test, y_test)
        class_names = CIFAR10_CLASSES
    elif name == "synthetic":
        num_classes = _positive_int(num_classes, "num_classes")
        num_examples = _positive_int(num_examples, "num_examples")
        images, labels = _synthetic(image_size or (32, 32), num_classes, num_examples, seed)
        arrays = _split(images, labels, test_split, validation_split, seed, stratify=False)
        class_names = tuple(f"class_{i}" for i in range(num_classes))
    elif os.path.isdir(name):
        return _folder(name, batch_size=batch_size, seed=seed, validation_split=validation_split,
                       test_split=test_split, augment=augment, padding=padding, flip=flip,
                       image_size=image_size, color_mode=color_mode, check_images=check_images)
    elif os.path.exists(name):
        raise ValueError(f"data {name!r} is a file; pass 'digits', 'cifar10', 'synthetic' or a "
                         "directory with one sub-folder of images per class")
    else:
        raise ValueError(f"unknown data set {name!r}: not one of {', '.join(SOURCES)} and not an "
                         "existing directory (a folder with one sub-folder of images per class)")

    x_train, y_train, x_val, y_val, x_test, y_test = arrays
    if len(x_train) == 0 or len(x_test) == 0:
        raise ValueError(f"data {name!r}: the split left {len(x_train)} training and "
                         f"{len(x_test)} test images; lower test_split/validation_split or use "
                         "more data")
    import tensorflow as tf

    augmentation = _augmentation_options(name, x_train.shape[1:], augment, padding, flip)
    mean = x_train.astype("float64").mean(axis=(0, 1, 2))
    variance = x_train.astype("float64").var(axis=(0, 1, 2))

    def source(x, y):
        return tf.data.Dataset.from_tensor_slices((x, y.astype("int32")))

    validation = None
    if len(x_val):
        validation = _pipeline(source(x_val, y_val), batch_size)
    return Dataset(
        name=name,
        train=_pipeline(source(x_train, y_train), batch_size, training=True, seed=seed,
                        size=len(x_train), augmentation=augmentation,
                        image_shape=x_train.shape[1:]),
        validation=validation,
        test=_pipeline(source(x_test, y_test), batch_size),
        class_names=tuple(class_names), input_shape=tuple(int(s) for s in x_train.shape[1:]),
        num_classes=len(class_names), train_size=len(x_train), validation_size=len(x_val),
        test_size=len(x_test), batch_size=batch_size, mean=tuple(float(m) for m in mean),
        variance=tuple(float(v) for v in variance), augmentation=augmentation)


def augmentation_layers(input_shape, padding, flip, seed=0):
    """The paper's augmentation as Keras layers: zero padding, random crop back, optional flip.

    Args:
        input_shape: ``(height, width, channels)`` of one image.
        padding: zero padding in pixels on every side (0: no crop either).
        flip: random horizontal flips.
        seed: seed of the random layers.

    Returns:
        A function ``augment(image) -> image`` for one (unbatched) image, using
        ``keras.layers.ZeroPadding2D``, ``RandomCrop`` and ``RandomFlip``; it draws a new crop
        and flip per image (``RandomCrop`` draws one offset per call, so batches would share it).
    """
    import keras

    height, width = int(input_shape[0]), int(input_shape[1])
    pad = keras.layers.ZeroPadding2D(padding) if padding else None
    crop = keras.layers.RandomCrop(height, width, seed=seed) if padding else None
    mirror = keras.layers.RandomFlip("horizontal", seed=seed + 1) if flip else None

    def augment(image):
        if pad is not None:
            image = crop(pad(image[None])[0], training=True)
        if mirror is not None:
            image = mirror(image, training=True)
        return image

    return augment


# ----------------------------------------------------------------------------- pipelines


def _augmentation_options(name, shape, augment, padding, flip):
    if not augment:
        return None
    default_padding, default_flip = _AUGMENTATION.get(name, (max(1, int(shape[0]) // 8), True))
    options = {"padding": default_padding if padding is None else padding,
               "flip": default_flip if flip is None else flip}
    return options if options["padding"] or options["flip"] else None


def _pipeline(dataset, batch_size, training=False, seed=0, size=0, augmentation=None,
              image_shape=None, cache=True):
    """cache -> (shuffle -> augment) -> float32 -> batch -> prefetch."""
    import tensorflow as tf

    if cache:
        dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(max(size, 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.map(lambda x, y: (tf.cast(x, tf.float32), y),
                          num_parallel_calls=tf.data.AUTOTUNE)
    if training and augmentation:
        augment = augmentation_layers(image_shape, augmentation["padding"],
                                      augmentation["flip"], seed)
        dataset = dataset.map(lambda x, y: (augment(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)


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


# ----------------------------------------------------------------------------- sources


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images * (255.0 / 16.0)).astype("float32")[..., None]
    return images, digits.target.astype("int32")


def _cifar10(cache_dir):
    """CIFAR-10 arrays from Keras' cache, downloading (and checking the sha256) when absent."""
    import keras
    # The batch reader keras.datasets.cifar10 uses (numpy-only unpickler).
    from keras.src.datasets.cifar import load_batch

    folder = keras.utils.get_file(fname=CIFAR10_CACHE_NAME, origin=CIFAR10_URL, extract=True,
                                  file_hash=CIFAR10_SHA256, cache_dir=cache_dir)
    folder = os.path.join(folder, "cifar-10-batches-py")

    def read(filename):
        path = os.path.join(folder, filename)
        if not os.path.isfile(path):
            raise ValueError(f"CIFAR-10 archive in {os.path.dirname(folder)!r} lacks {filename!r}; "
                             "delete the cached files to download it again")
        data, labels = load_batch(path)
        return data.transpose(0, 2, 3, 1), np.asarray(labels, dtype="int32")

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


def _folder(path, *, batch_size, seed, validation_split, test_split, augment, padding, flip,
            image_size, color_mode, check_images):
    """A directory of class sub-folders through keras.utils.image_dataset_from_directory."""
    import keras
    import tensorflow as tf
    from PIL import Image

    formats = (".bmp", ".gif", ".jpeg", ".jpg", ".png")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    files = [os.path.join(path, c, f) for c in classes
             for f in sorted(os.listdir(os.path.join(path, c))) if f.lower().endswith(formats)]
    if not files:
        raise ValueError(f"data folder {path!r} has no images: expected one sub-folder per class "
                         f"holding {', '.join(formats)} files; found sub-folders {classes}")
    if len(classes) < 2:
        raise ValueError(f"data folder {path!r} needs at least 2 class sub-folders; found "
                         f"{classes}")
    if test_split == 0:
        raise ValueError("test_split must be > 0 for a folder (it has no separate test set); "
                         "got 0")
    if check_images:
        for file in files:
            try:  # the decoder the pipeline itself uses
                tf.io.decode_image(tf.io.read_file(file), expand_animations=False)
            except (tf.errors.OpError, ValueError) as error:
                raise ValueError(f"corrupt or unreadable image {file!r} in data folder "
                                 f"{path!r}: {error}") from None
    if image_size is None or color_mode is None:
        with Image.open(files[0]) as first:
            image_size = image_size or (first.height, first.width)
            color_mode = color_mode or ("grayscale" if first.mode in ("1", "L", "LA", "I",
                                                                      "I;16", "F") else "rgb")
    holdout = validation_split * (1 - test_split) + test_split
    train, rest = keras.utils.image_dataset_from_directory(
        path, labels="inferred", label_mode="int", color_mode=color_mode, batch_size=None,
        image_size=image_size, shuffle=True, seed=seed, validation_split=holdout,
        subset="both", verbose=False)
    class_names = tuple(train.class_names)
    train_size, rest_size = len(train.file_paths), len(rest.file_paths)
    validation_size = int(round(len(files) * validation_split * (1 - test_split)))
    validation_size = min(validation_size, rest_size - 1)
    test_size = rest_size - validation_size
    channels = {"rgb": 3, "grayscale": 1, "rgba": 4}[color_mode]
    shape = (int(image_size[0]), int(image_size[1]), channels)

    # Statistics of the unaugmented training images (one pass; it also fills the cache).
    cached = train.map(lambda x, y: (x, tf.cast(y, tf.int32))).cache()
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    for images, _ in cached.batch(256):
        pixels = images.numpy().astype("float64").reshape(-1, channels)
        total += pixels.sum(0)
        total_sq += (pixels ** 2).sum(0)
    count = train_size * shape[0] * shape[1]
    mean = total / count
    variance = np.maximum(total_sq / count - mean ** 2, 0.0)

    augmentation = _augmentation_options(path, shape, augment, padding, flip)
    rest = rest.map(lambda x, y: (x, tf.cast(y, tf.int32)))
    validation = _pipeline(rest.take(validation_size), batch_size) if validation_size else None
    return Dataset(
        name=path,
        train=_pipeline(cached, batch_size, training=True, seed=seed, size=train_size,
                        augmentation=augmentation, image_shape=shape, cache=False),
        validation=validation, test=_pipeline(rest.skip(validation_size), batch_size),
        class_names=class_names, input_shape=shape, num_classes=len(class_names),
        train_size=train_size, validation_size=validation_size, test_size=test_size,
        batch_size=batch_size, mean=tuple(float(m) for m in mean),
        variance=tuple(float(v) for v in variance), augmentation=augmentation)
