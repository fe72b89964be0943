"""Image preprocessing in ``tf.data``: decode, the Inception-style random-resized crop, the
evaluation center crop, flips.

Keras has no random-resized-crop layer, so it lives here as plain TensorFlow ops that run inside
``Dataset.map``. Every function returns float32 raw pixel values (0..255): normalization belongs to
the model. ``decode_for_eval`` is *the* evaluation preprocessing; an exported ``serving_bytes``
signature applies exactly it, so a served prediction equals ``model.evaluate``'s.
"""

from __future__ import annotations

import tensorflow as tf

# Inception / torchvision RandomResizedCrop: area 8%..100% of the image, aspect 3/4..4/3.
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
CROP_ATTEMPTS = 10
# The evaluation center crop of the ImageNet recipe (224 of 256).
EVAL_CROP_FRACTION = 0.875


def _decode(image_bytes, channels):
    # expand_animations=False: a GIF gives its first frame, a 3-D image like every other format
    image = tf.io.decode_image(image_bytes, channels=channels, expand_animations=False)
    image.set_shape([None, None, channels])
    return image


def _resize(image, image_size):
    # antialias: downscaling a large photo to 224 without aliasing, as PIL does
    image = tf.image.resize(image, image_size, method="bilinear", antialias=True)
    return tf.clip_by_value(image, 0.0, 255.0)


def center_crop_window(height, width, crop_fraction):
    """The centered square-ish crop of the evaluation preprocessing, as ``[y, x, h, w]``.

    The crop keeps ``crop_fraction`` of the shorter side in both directions (the ImageNet
    recipe: 224/256 = 0.875), so the crop is square; ``crop_fraction == 1`` keeps the whole image.
    """
    height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
    if crop_fraction >= 1.0:
        return tf.stack([0, 0, tf.cast(height, tf.int32), tf.cast(width, tf.int32)])
    side = tf.cast(crop_fraction * tf.minimum(height, width), tf.int32)
    y = (tf.cast(height, tf.int32) - side + 1) // 2
    x = (tf.cast(width, tf.int32) - side + 1) // 2
    return tf.stack([y, x, side, side])


def decode_for_eval(image_bytes, image_size, channels=3, crop_fraction=EVAL_CROP_FRACTION):
    """The evaluation preprocessing: encoded bytes -> one float32 image of ``image_size``.

    Decodes (JPEG, PNG, GIF, BMP), takes the center crop (``center_crop_window``) and resizes it
    bilinearly with antialiasing to ``image_size``. Use it (in a ``tf.function`` or
    ``tf.map_fn``) to serve exactly what ``Dataset.test`` evaluates on.

    Args:
        image_bytes: a scalar string tensor holding one encoded image.
        image_size: ``(height, width)`` of the output.
        channels: 3 (RGB) or 1 (grayscale).
        crop_fraction: ``Dataset.crop_fraction`` (1.0: resize the whole image).

    Returns:
        A float32 tensor ``[height, width, channels]`` of raw pixel values 0..255.
    """
    image = _decode(image_bytes, channels)
    shape = tf.shape(image)
    window = center_crop_window(shape[0], shape[1], crop_fraction)
    image = tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])
    return _resize(tf.cast(image, tf.float32), image_size)


def random_crop_window(height, width, seed=None, key=None):
    """An Inception-style random crop ``[y, x, h, w]`` (area 8-100%, aspect 3/4-4/3).

    After ``CROP_ATTEMPTS`` failed draws the whole image is used, as
    ``tf.image.sample_distorted_bounding_box`` does. With ``key`` (an int64 ``[2]`` tensor) the
    draw is stateless, a function of ``key`` alone; otherwise an op seeded by ``seed``.
    """
    bbox = tf.constant([0.0, 0.0, 1.0, 1.0], dtype=tf.float32, shape=[1, 1, 4])
    draw = dict(bounding_boxes=bbox, min_object_covered=0.1, aspect_ratio_range=CROP_ASPECT,
                area_range=CROP_AREA, max_attempts=CROP_ATTEMPTS,
                use_image_if_no_bounding_boxes=True)
    if key is None:  # a non-zero op seed: under op determinism TensorFlow requires one
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.stack([height, width, 3]), seed=(seed or 0) + 1, **draw)
    else:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            tf.stack([height, width, 3]), seed=key, **draw)
    return tf.stack([begin[0], begin[1], size[0], size[1]])


def decode_for_training(image_bytes, image_size, channels=3, flip=True, seed=None, key=None):
    """The training augmentation: encoded bytes -> a random-resized crop, maybe flipped.

    A JPEG decodes only its crop (``tf.image.decode_and_crop_jpeg``); other formats decode
    whole and are cropped.

    Args:
        image_bytes: a scalar string tensor holding one encoded image.
        image_size: ``(height, width)`` of the output.
        channels: 3 or 1.
        flip: random horizontal flips.
        seed: op seed of the crop and flip draws (without ``key``).
        key: an int64 ``[2]`` tensor: the crop and the flip are stateless draws keyed by it
            (the same image for the same key, whatever the process or the map's parallelism).

    Returns:
        A float32 tensor ``[height, width, channels]`` of raw pixel values 0..255.
    """
    is_jpeg = tf.io.is_jpeg(image_bytes)
    crop_key = flip_key = None
    if key is not None:
        crop_key, flip_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))

    def jpeg():
        size = tf.image.extract_jpeg_shape(image_bytes)
        window = random_crop_window(size[0], size[1], seed, crop_key)
        image = tf.image.decode_and_crop_jpeg(image_bytes, window, channels=channels)
        image.set_shape([None, None, channels])
        return image

    def other():
        image = _decode(image_bytes, channels)
        size = tf.shape(image)
        window = random_crop_window(size[0], size[1], seed, crop_key)
        return tf.image.crop_to_bounding_box(image, window[0], window[1], window[2], window[3])

    image = tf.cond(is_jpeg, jpeg, other)
    image = _resize(tf.cast(image, tf.float32), image_size)
    if flip and key is not None:
        image = tf.image.stateless_random_flip_left_right(image, flip_key)
    elif flip:
        image = tf.image.random_flip_left_right(image, seed=seed)
    return image
