"""`keras-resnet export MODEL.keras`: a versioned SavedModel bundle for TF Serving."""

from __future__ import annotations

import os
import sys


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
    parser.add_argument("--out", default="saved_models",
                        help="base directory of the bundle (default: saved_models)")
    parser.add_argument("--input-dtype", choices=("uint8", "float32"), default="uint8",
                        help="dtype of the `images` input (default: uint8)")
    parser.add_argument("--labels", default=None, metavar="FILE",
                        help="class names, one per line: adds the `labels` output")
    parser.add_argument("--top-k", type=int, default=5, help="classes per answer (default: 5)")
    parser.add_argument("--resize", action="store_true",
                        help="accept images of any size in `images` and resize them in the graph")
    parser.add_argument("--verify", action="store_true",
                        help="load the export in a TensorFlow-only process and compare outputs")
    parser.set_defaults(func=run)


def run(args):
    """Loads the model, exports it and optionally verifies the export."""
    if not args.model.endswith((".keras", ".h5")):
        raise ValueError(f"MODEL must be a .keras (or .h5) file saved with model.save(); got "
                         f"{args.model!r}")
    if not os.path.isfile(args.model):
        raise FileNotFoundError(f"model file {args.model!r} does not exist")
    class_names = None
    if args.labels is not None:
        if not os.path.isfile(args.labels):
            raise FileNotFoundError(f"labels file {args.labels!r} does not exist")
        with open(args.labels, encoding="utf-8") as handle:
            class_names = [line.strip() for line in handle if line.strip()]
    import keras

    from keras_resnet.export import export_saved_model, verify_export

    model = keras.models.load_model(args.model, compile=False)
    path = export_saved_model(model, args.out, name=args.name, version=args.version,
                              class_names=class_names, input_dtype=args.input_dtype,
                              top_k=args.top_k, resize=args.resize)
    if args.verify:
        from keras_resnet.export import ExportVerificationError

        try:
            verify_export(path, model=model)
        except ExportVerificationError as error:
            print(f"keras-resnet export: verification failed: {error}", file=sys.stderr)
            return 1
    print(path)
    return 0
