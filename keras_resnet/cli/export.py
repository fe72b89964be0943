"""`keras-resnet export MODEL.keras`: a versioned SavedModel bundle for TF Serving."""

from __future__ import annotations

import argparse
import os
import sys

from keras_resnet import checks
from keras_resnet.constants import DEFAULT_EXPORT_DIR, DEFAULT_TOP_K, INPUT_DTYPES


def register(subparsers):
    """Adds the `export` subcommand."""
    parser = subparsers.add_parser(
        "export", help="export a .keras model as a versioned SavedModel for TF Serving",
        description="Writes OUT/NAME/VERSION/ (appearing atomically) with the serving_default "
                    "(images) and serving_bytes (JPEG/PNG) signatures and warmup requests, and "
                    "beside it models.config, batching_parameters.txt, docker-run.sh and a "
                    "KServe InferenceService manifest.")
    parser.add_argument("model", metavar="MODEL.keras", help="a model saved with model.save()")
    parser.add_argument("--name", default=None, help="serving name (default: the model's name)")
    parser.add_argument("--version", type=int, default=None,
                        help="version number (default: the next free one; never overwrites)")
    parser.add_argument("--out", default=DEFAULT_EXPORT_DIR,
                        help=f"base directory of the bundle (default: {DEFAULT_EXPORT_DIR})")
    parser.add_argument("--input-dtype", choices=INPUT_DTYPES, default=INPUT_DTYPES[0],
                        help=f"dtype of the `images` input (default: {INPUT_DTYPES[0]})")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="class names, one per line: adds the `labels` output")
    parser.add_argument("--top-k", type=int, default=None,
                        help=f"classes per answer, 1..classes (default: {DEFAULT_TOP_K}, or the "
                             "number of classes if fewer)")
    parser.add_argument("--resize", action="store_true",
                        help="accept images of any size in `images` and resize them in the graph")
    parser.add_argument("--crop-fraction", type=float, default=1.0, metavar="F",
                        help="center crop of `serving_bytes` before resizing, as the model was "
                             "evaluated (e.g. 0.875 for the ImageNet recipe; default 1: whole image)")
    parser.add_argument("--version-label", action="append", default=[], metavar="LABEL",
                        help="label the new version in models.config (repeatable), e.g. "
                             "canary: TF Serving's /v1/models/NAME/labels/LABEL")
    parser.add_argument("--fold-batch-norm", action=argparse.BooleanOptionalAction,
                        default=None,
                        help="serve the model with each BatchNormalization folded into its "
                             "convolution and bfloat16 weights stored as bfloat16 (default: on "
                             "for functional models; the served outputs match the folded "
                             "model's)")
    parser.add_argument("--verify", action="store_true",
                        help="load the export in a TensorFlow-only process and compare outputs")
    parser.set_defaults(func=run)


def load_keras_model(path):
    """Loads a ``.keras``/``.h5`` file, or raises ValueError saying why it cannot be read."""
    import zipfile

    if not path.endswith((".keras", ".h5")):
        raise ValueError(f"MODEL must be a .keras (or .h5) file saved with model.save(); got "
                         f"{path!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    if path.endswith(".keras") and not zipfile.is_zipfile(path):
        raise ValueError(f"model file {path!r} is not a readable .keras file (not a zip "
                         "archive: truncated or corrupt?); save it again with model.save()")
    import keras

    try:
        return keras.models.load_model(path, compile=False)
    except (ValueError, OSError, KeyError, zipfile.BadZipFile) as error:
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ValueError(f"model file {path!r} is not a readable Keras model file: "
                         f"{detail}") from None


def _read_labels(path):
    if path is None:
        return None
    if not os.path.isfile(path):
        raise FileNotFoundError(f"labels file {path!r} does not exist")
    with open(path, encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def run(args):
    """Loads the model, exports it and optionally verifies the export."""
    # Checked before the model loads; the export's own checks (name, version, top_k in
    # [1, classes], ...) come from the library.
    checks.created_dir(args.out, "--out")
    class_names = _read_labels(args.labels)
    model = load_keras_model(args.model)

    from keras_resnet.export import ExportVerificationError, export_saved_model, verify_export
    from keras_resnet.export.verify import summary

    path = export_saved_model(model, args.out, name=args.name, version=args.version,
                              class_names=class_names, input_dtype=args.input_dtype,
                              top_k=args.top_k, resize=args.resize,
                              crop_fraction=args.crop_fraction,
                              version_labels=args.version_label,
                              fold_batch_norm=args.fold_batch_norm)
    if args.verify:
        try:
            report = verify_export(path, model=model, verbose=False)
        except ExportVerificationError as error:
            print(f"keras-resnet export: verification failed: {error}", file=sys.stderr)
            return 1
        print(report["table"])
        print(f"\n{summary(path, report, 1e-5)}")
    print(path)
    return 0
