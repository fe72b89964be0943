"""Generated image folders for the data tests: mixed sizes and formats, broken and stray files."""

from __future__ import annotations

import io
import os

import numpy as np

# Class c's pixels lie in LEVELS[c] .. LEVELS[c] + 15, so a decoded image tells its class.
LEVELS = (30, 120, 210)
CLASSES = ("cat", "dog", "fish")
# (file name, Pillow format, Pillow mode, (height, width)) per class: 6 good images each.
MIXED = (
    ("a.jpg", "JPEG", "RGB", (24, 32)),
    ("b.png", "PNG", "RGBA", (40, 28)),
    ("c.png", "PNG", "L", (32, 32)),
    ("d.png", "PNG", "P", (20, 36)),
    ("e.jpeg", "JPEG", "CMYK", (36, 24)),
    ("f.bmp", "BMP", "RGB", (30, 30)),
)


def _image(level, mode, size, rng):
    from PIL import Image

    pixels = level + rng.integers(0, 16, size=(*size, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")
    if mode == "P":
        return image.quantize(16)
    return image.convert(mode)


def make_mixed_folder(root, truncated=True, strays=True) -> dict:
    """Writes ``root/<class>/…`` (18 good images); returns {class: [good file names]}.

    With ``truncated`` every class also gets ``broken.jpg`` (a JPEG cut in half); with
    ``strays`` the folder holds ``README.txt``, ``.DS_Store`` and ``notes.md``, which are not
    images.
    """
    rng = np.random.default_rng(0)
    written = {}
    for level, name in zip(LEVELS, CLASSES):
        folder = os.path.join(root, name)
        os.makedirs(folder)
        written[name] = []
        for filename, image_format, mode, size in MIXED:
            _image(level, mode, size, rng).save(os.path.join(folder, filename), image_format)
            written[name].append(filename)
        if truncated:
            buffer = io.BytesIO()
            _image(level, "RGB", (32, 32), rng).save(buffer, "JPEG")
            with open(os.path.join(folder, "broken.jpg"), "wb") as stream:
                stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    if strays:
        for stray in ("README.txt", ".DS_Store", os.path.join("dog", "notes.md")):
            with open(os.path.join(root, stray), "w") as stream:
                stream.write("not an image")
    return written


def make_jpeg_folder(root, classes=2, per_class=8, size=(48, 40)):
    """A plain folder of RGB JPEGs, class c at level LEVELS[c]."""
    from PIL import Image

    rng = np.random.default_rng(1)
    for c in range(classes):
        folder = os.path.join(root, CLASSES[c])
        os.makedirs(folder)
        for i in range(per_class):
            pixels = LEVELS[c] + rng.integers(0, 16, size=(*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(os.path.join(folder, f"{i:03d}.jpg"), quality=95)
    return root
