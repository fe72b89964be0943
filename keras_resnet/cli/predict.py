"""`keras-resnet predict --server URL --model NAME image.png ...`: top-k labels from a server."""

from __future__ import annotations

import os


def register(subparsers):
    """Adds the `predict` subcommand."""
    parser = subparsers.add_parser(
        "predict", help="classify image files with a TF Serving (or `keras-resnet serve`) model",
        description="Sends each JPEG/PNG file as {\"b64\": ...} to the model's serving_bytes "
                    "signature (decoded and resized on the server) and prints the top-k labels.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files")
    parser.add_argument("--server", default="http://127.0.0.1:8501",
                        help="REST base URL (default: http://127.0.0.1:8501)")
    parser.add_argument("--model", required=True, help="the served model name")
    parser.add_argument("--version", type=int, default=None, help="pin a version (default: latest)")
    parser.add_argument("--top-k", type=int, default=None,
                        help="how many classes to print per image (default: all exported)")
    parser.add_argument("--grpc", default=None, metavar="HOST:PORT",
                        help="use TF Serving's gRPC API at HOST:PORT instead of REST")
    parser.set_defaults(func=run)


def run(args):
    """Prints one line per image: ``file: label (score), ...``."""
    from keras_resnet.serving import Client

    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1; got {args.top_k}")
    for path in args.images:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path!r} does not exist")
    encoded = []
    for path in args.images:
        with open(path, "rb") as handle:
            encoded.append(handle.read())
    client = Client(args.server, grpc_target=args.grpc)
    if args.grpc:
        outputs = client.grpc_predict(args.model, {"image_bytes": encoded},
                                      signature_name="serving_bytes", version=args.version)
        rows = [{k: v[i].tolist() for k, v in outputs.items()} for i in range(len(encoded))]
        for row in rows:
            row["labels"] = [b.decode() for b in row.get("labels", [])] or None
    else:
        rows = client.classify_images(args.model, encoded=encoded, version=args.version)
    for path, row in zip(args.images, rows):
        names = row.get("labels") or [str(c) for c in row["classes"]]
        pairs = list(zip(names, row["scores"]))[:args.top_k]
        print(f"{path}: " + ", ".join(f"{name} ({score:.3f})" for name, score in pairs))
    return 0
