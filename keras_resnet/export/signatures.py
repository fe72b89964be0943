"""Serving signatures: a batch of images or of encoded image bytes in, named float32 outputs out.

Three signatures go into every export:

- ``serving_default``: ``images`` [batch, height, width, channels], uint8 (or float32) raw pixel
  values 0..255, dynamic batch;
- ``serving_bytes``: ``image_bytes`` [batch] strings holding JPEG or PNG files, decoded and
  resized in the graph (what a REST client sends as ``{"b64": ...}``);
- ``classify``: ``inputs`` [batch] serialized ``tf.train.Example``s with the image under
  ``image/encoded``, TF Serving's classification contract (``:classify``): top-k class names
  ``classes`` and ``scores``.

The first two return ``probabilities`` [batch, classes] and the top-k ``scores`` (float32) and
``classes`` (int64), plus ``labels`` (top-k class names) when the class names are known. The
preprocessing (cast, optional resize, optional scale/offset) runs in the graph; normalization
proper is a layer of the trained model itself.
"""

from __future__ import annotations

import dataclasses
import weakref

import numpy as np
import tensorflow as tf

from keras_resnet import checks
from keras_resnet.constants import (BYTES_INPUT, BYTES_SIGNATURE, CLASSIFY_INPUT,
                                    CLASSIFY_SIGNATURE, DEFAULT_TOP_K, EXAMPLE_IMAGE_FEATURE,
                                    IMAGES_INPUT, IMAGES_SIGNATURE, INPUT_DTYPES, OUTPUTS)

__all__ = ["BYTES_INPUT", "BYTES_SIGNATURE", "CLASSIFY_INPUT", "CLASSIFY_SIGNATURE",
           "EXAMPLE_IMAGE_FEATURE", "IMAGES_INPUT", "IMAGES_SIGNATURE", "INPUT_DTYPES", "OUTPUTS",
           "ServingSpec", "keras_reference", "make_spec", "serving_functions"]


@dataclasses.dataclass(frozen=True)
class ServingSpec:
    """Everything the serving graph needs to know about a model, as plain data (JSON-able)."""

    height: int
    width: int
    channels: int
    classes: int
    input_dtype: str = "uint8"
    top_k: int = 5
    class_names: tuple | None = None
    resize: bool = False
    scale: float = 1.0
    offset: float = 0.0
    apply_softmax: bool = False
    crop_fraction: float = 1.0

    def to_json(self):
        """Returns the spec as a JSON-serialisable dict."""
        data = dataclasses.asdict(self)
        data["class_names"] = list(self.class_names) if self.class_names else None
        return data

    @property
    def output_names(self):
        """Names of the outputs of the images and bytes signatures."""
        return OUTPUTS if self.class_names else OUTPUTS[:3]


def _is_softmax_head(model):
    """True when the model already ends in a softmax/sigmoid (its outputs are probabilities)."""
    last = model.layers[-1]
    while getattr(last, "layers", None):  # a nested model as the last layer: look inside
        last = last.layers[-1]
    activation = getattr(last, "activation", None)
    name = getattr(activation, "__name__", str(activation))
    return name in ("softmax", "sigmoid")


def make_spec(model, *, input_dtype="uint8", top_k=None, class_names=None, image_size=None,
              resize=False, scale=1.0, offset=0.0, logits=None,
              crop_fraction=1.0) -> ServingSpec:
    """Validates the export options against the model and returns a `ServingSpec`.

    Args:
        model: a built Keras image classifier with one input [batch, height, width, channels]
            and one output [batch, classes].
        input_dtype: ``"uint8"`` (default) or ``"float32"``: dtype of the ``images`` input.
        top_k: how many (score, class) pairs the ``scores``/``classes``/``labels`` outputs carry,
            in ``[1, classes]``; None: ``DEFAULT_TOP_K`` (5) or the number of classes if fewer.
        class_names: optional sequence of one name per class: adds the ``labels`` output.
        image_size: ``(height, width)`` the images are resized to; defaults to the model's input
            size (required when the model takes any size).
        resize: when True, ``images`` accepts any height and width and is resized in the graph.
        scale, offset: ``x * scale + offset`` after the cast (default: raw 0..255 pixels).
        logits: whether the model outputs logits (softmax is applied in the graph); None detects
            it from the last layer's activation.
        crop_fraction: the center crop ``serving_bytes`` takes before resizing, in (0, 1]:
            the training data's ``Dataset.crop_fraction``, so that a served prediction equals
            ``model.evaluate``'s on the same file (1.0: the whole image).

    Returns:
        A `ServingSpec`.

    Raises:
        ValueError, TypeError: an option is out of range or does not fit the model.
    """
    height, width, channels, classes = _model_shape(model)
    checks.one_of(input_dtype, "input_dtype", INPUT_DTYPES)
    top_k = min(DEFAULT_TOP_K, classes) if top_k is None else checks.positive_int(
        top_k, "top_k", maximum=classes)
    class_names = _check_class_names(class_names, classes)
    if image_size is not None:
        if not isinstance(image_size, (tuple, list)) or len(image_size) != 2:
            raise TypeError(f"image_size must be (height, width) of positive ints; got "
                            f"{image_size!r}")
        image_size = tuple(checks.positive_int(s, "image_size") for s in image_size)
        if height not in (None, image_size[0]) or width not in (None, image_size[1]):
            raise ValueError(f"image_size {image_size} differs from the model's input "
                             f"size {(height, width)}; leave it out or pass the model's size")
        height, width = image_size
    if height is None or width is None:
        raise ValueError(f"model input size is {tuple(model.inputs[0].shape)}: pass "
                         "image_size=(height, width) so the serving graph knows what to resize "
                         "to")
    checks.boolean(resize, "resize")
    if logits is None:
        logits = not _is_softmax_head(model)
    checks.boolean(logits, "logits")
    return ServingSpec(height=int(height), width=int(width), channels=int(channels),
                       classes=classes, input_dtype=input_dtype, top_k=top_k,
                       class_names=class_names, resize=resize,
                       scale=checks.number(scale, "scale"), offset=checks.number(offset, "offset"),
                       apply_softmax=logits,
                       crop_fraction=checks.number(crop_fraction, "crop_fraction", minimum=0,
                                                   maximum=1, min_inclusive=False))


def _model_shape(model):
    """(height, width, channels, classes) of a one-input, one-output image classifier."""
    if not hasattr(model, "inputs") or not hasattr(model, "outputs") or not model.inputs:
        raise TypeError(f"model must be a built keras.Model; got {type(model).__name__}")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError("model must have one image input and one class output; got "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
    input_shape = tuple(model.inputs[0].shape)
    output_shape = tuple(model.outputs[0].shape)
    if len(input_shape) != 4:
        raise ValueError("model input must be [batch, height, width, channels]; got shape "
                         f"{input_shape}")
    if len(output_shape) != 2 or not output_shape[1]:
        raise ValueError("model output must be [batch, classes] (include_top=True); got shape "
                         f"{output_shape}")
    height, width, channels = input_shape[1:]
    if channels not in (1, 3, 4):
        raise ValueError(f"model input channels must be 1, 3 or 4 (grayscale, RGB, RGBA) to "
                         f"decode images; got {channels}")
    return height, width, channels, int(output_shape[1])


def _check_class_names(class_names, classes):
    if class_names is None:
        return None
    if isinstance(class_names, str) or not all(isinstance(n, str) for n in class_names):
        raise TypeError("class_names must be a sequence of strings (one per class); got "
                        f"{class_names!r}")
    class_names = tuple(class_names)
    if len(class_names) != classes:
        raise ValueError(f"class_names has {len(class_names)} names but the model has "
                         f"{classes} classes; give one name per class")
    return class_names


def _prepare(spec, images):
    """Raw pixels (any real dtype) -> the float32 batch the Keras model takes."""
    images = tf.cast(images, tf.float32)
    if spec.resize:
        images = tf.image.resize(images, (spec.height, spec.width), method="bilinear")
    if spec.scale != 1.0 or spec.offset != 0.0:
        images = images * spec.scale + spec.offset
    return images


def _decode(spec, image_bytes):
    """Decodes one JPEG/PNG string into the model's input (float32 0..255): exactly the
    evaluation preprocessing of ``keras_resnet.data`` (center crop, antialiased resize)."""
    # A leaf module of pure TensorFlow ops: one definition for training data and serving.
    from keras_resnet.data.images import decode_for_eval

    image = decode_for_eval(image_bytes, (spec.height, spec.width), spec.channels,
                            spec.crop_fraction)
    image.set_shape((spec.height, spec.width, spec.channels))
    return image


def _postprocess(spec, outputs, names=None):
    """Model outputs -> the named float32/int64/string outputs of the signatures."""
    probabilities = tf.cast(outputs, tf.float32)
    if spec.apply_softmax:
        probabilities = tf.nn.softmax(probabilities, axis=-1)
    scores, indices = tf.math.top_k(probabilities, k=spec.top_k)
    result = {"probabilities": probabilities, "scores": scores,
              "classes": tf.cast(indices, tf.int64)}
    if spec.class_names:
        result["labels"] = tf.gather(tf.constant(list(spec.class_names)), indices)
    return result


def shape_message(spec) -> str:
    """The error the serving graph raises for an ``images`` batch of the wrong shape."""
    size = "height, width" if spec.resize else f"{spec.height}, {spec.width}"
    return f"{IMAGES_INPUT} must have shape [batch, {size}, {spec.channels}]; got shape"


def _checked_shape(spec, images):
    """``images`` after an in-graph shape check.

    TF Serving feeds a request's tensor whatever its shape (the signature's shape is metadata),
    and a convolutional network answers an 8x4 image as readily as an 8x8 one: without this
    check a wrong size gives a silent, wrong answer in production. In the graph it holds on every
    server (INVALID_ARGUMENT with `shape_message`).
    """
    wanted = tf.constant([-1, -1 if spec.resize else spec.height,
                          -1 if spec.resize else spec.width, spec.channels], tf.int64)
    actual = tf.shape(images, out_type=tf.int64)
    padded = tf.concat([actual, tf.zeros([4], tf.int64)], axis=0)[:4]
    valid = tf.logical_and(tf.equal(tf.size(actual), 4),
                           tf.reduce_all(tf.logical_or(wanted < 0, tf.equal(padded, wanted))))
    check = tf.debugging.Assert(valid, [shape_message(spec), actual], summarize=8)
    with tf.control_dependencies([check]):
        return tf.identity(images)


def serving_functions(model, spec):
    """Returns ``{signature name: (function, input_signature)}`` ready for an ExportArchive."""
    size = (None, None) if spec.resize else (spec.height, spec.width)
    dtype = tf.uint8 if spec.input_dtype == "uint8" else tf.float32

    # One traced copy of the network, called by every signature (smaller saved_model.pb).
    network = tf.function(lambda x: model(x, training=False), autograph=False)

    def serve_images(images):
        return _postprocess(spec, network(_prepare(spec, _checked_shape(spec, images))))

    def serve_bytes(image_bytes):
        decoded = tf.map_fn(lambda b: _decode(spec, b), image_bytes,
                            fn_output_signature=tf.TensorSpec(
                                (spec.height, spec.width, spec.channels), tf.float32))
        resized = dataclasses.replace(spec, resize=False)
        return _postprocess(spec, network(_prepare(resized, decoded)))

    def serve_examples(inputs):
        # TF Serving's classification contract: serialized tf.Examples in, top-k class names
        # ("classes", string) and "scores" out; this makes :classify work on TF Serving.
        features = tf.io.parse_example(
            inputs, {EXAMPLE_IMAGE_FEATURE: tf.io.FixedLenFeature([], tf.string)})
        outputs = serve_bytes(features[EXAMPLE_IMAGE_FEATURE])
        return {"classes": tf.gather(tf.constant(class_labels(spec)), outputs["classes"]),
                "scores": outputs["scores"]}

    return {
        IMAGES_SIGNATURE: (serve_images, [tf.TensorSpec((None, *size, spec.channels), dtype,
                                                        name=IMAGES_INPUT)]),
        BYTES_SIGNATURE: (serve_bytes, [tf.TensorSpec((None,), tf.string, name=BYTES_INPUT)]),
        CLASSIFY_SIGNATURE: (serve_examples, [tf.TensorSpec((None,), tf.string,
                                                            name=CLASSIFY_INPUT)]),
    }


def class_labels(spec) -> list[str]:
    """The ``classes`` strings of the classify signature: class names, or "0", "1", ..."""
    return list(spec.class_names) if spec.class_names else [str(i) for i in range(spec.classes)]


def image_examples(encoded) -> np.ndarray:
    """Serialized ``tf.train.Example``s with each JPEG/PNG under ``EXAMPLE_IMAGE_FEATURE``."""
    return np.array([tf.train.Example(features=tf.train.Features(feature={
        EXAMPLE_IMAGE_FEATURE: tf.train.Feature(bytes_list=tf.train.BytesList(value=[b]))}))
        .SerializeToString() for b in encoded], dtype=object)


# One graph function per model for keras_reference; an entry goes when its model does.
_GRAPH_CALLS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _graph_call(model):
    """``model(x, training=False)`` as one ``tf.function`` per model, traced once per shape."""
    call = _GRAPH_CALLS.get(model)
    if call is None:
        # A weak reference: a function holding the model would keep its own key alive.
        held = weakref.ref(model)
        call = tf.function(lambda x: held()(x, training=False), autograph=False,
                           reduce_retracing=True)
        _GRAPH_CALLS[model] = call
    return call


def keras_reference(model, spec, signature, inputs):
    """The expected outputs of ``signature`` on ``inputs``, computed with the Keras model.

    The model runs as a TensorFlow graph, as the served one does, so both get the same
    graph rewrites (fused convolution + bias in bfloat16 rounds once, where eager rounds twice).
    Postprocessing is done in NumPy so the check does not reuse the serving graph's code.
    """
    if signature == CLASSIFY_SIGNATURE:
        encoded = [tf.train.Example.FromString(bytes(e)).features.feature[
            EXAMPLE_IMAGE_FEATURE].bytes_list.value[0] for e in inputs]
        result = keras_reference(model, spec, BYTES_SIGNATURE, encoded)
        return {"classes": _utf8_bytes(class_labels(spec))[result["classes"]],
                "scores": result["scores"]}
    if signature == BYTES_SIGNATURE:
        images = np.stack([_decode(spec, tf.constant(b)).numpy() for b in inputs])
        prepared = _prepare(dataclasses.replace(spec, resize=False), images)
    else:
        prepared = _prepare(spec, np.asarray(inputs))
    raw = np.asarray(_graph_call(model)(tf.constant(prepared))).astype(np.float32)
    if spec.apply_softmax:
        shifted = np.exp(raw - raw.max(axis=-1, keepdims=True))
        raw = (shifted / shifted.sum(axis=-1, keepdims=True)).astype(np.float32)
    order = np.argsort(-raw, axis=-1, kind="stable")[:, :spec.top_k]
    result = {"probabilities": raw, "scores": np.take_along_axis(raw, order, axis=-1),
              "classes": order.astype(np.int64)}
    if spec.class_names:
        result["labels"] = _utf8_bytes(spec.class_names)[order]
    return result


def _utf8_bytes(names) -> np.ndarray:
    """``names`` as the bytes a tf.string tensor of them holds: ``tf.constant`` stores a
    Python str as UTF-8 (NumPy's ``astype(bytes)`` would take ASCII only)."""
    return np.array([name.encode("utf-8") for name in names], dtype=bytes)
