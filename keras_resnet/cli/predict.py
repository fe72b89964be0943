"""`keras-resnet predict --server URL --model NAME image.png ...`: top-k labels from a server."""

from __future__ import annotations

import os

from keras_resnet import checks
from keras_resnet.constants import BYTES_INPUT, BYTES_SIGNATURE, DEFAULT_HOST, DEFAULT_REST_PORT


def register(subparsers):
    """Adds the `predict` subcommand."""
    parser = subparsers.add_parser(
        "predict", help="classify image files with a TF Serving (or `keras-resnet serve`) model",
        description="Sends each JPEG/PNG file as {\"b64\": ...} to the model's serving_bytes "
                    "signature (decoded and resized on the server) and prints the top-k labels.")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG or PNG files")
    parser.add_argument("--server", default=f"http://{DEFAULT_HOST}:{DEFAULT_REST_PORT}",
                        help=f"REST base URL (default: http://{DEFAULT_HOST}:{DEFAULT_REST_PORT})")
    parser.add_argument("--model", required=True, help="the served model name")
    parser.add_argument("--version", type=int, default=None, help="pin a version (default: latest)")
    parser.add_argument("--top-k", type=int, default=None,
                        help="how many classes to print per image (default: all exported)")
    parser.add_argument("--grpc", default=None, metavar="HOST:PORT",
                        help="use TF Serving's gRPC API at HOST:PORT instead of REST")
    parser.set_defaults(func=run)


def run(args):
    """Prints one line per image: ``file: label (score), ...``."""
    from keras_resnet.serving import Client, ServingError

    checks.optional_positive_int(args.top_k, "--top-k")
    for path in args.images:
        if os.path.isdir(path):
            raise ValueError(f"IMAGE {path!r} is a directory; give image files (JPEG, PNG, BMP "
                             f"or GIF), e.g. {os.path.join(path, '*.jpg')}")
        if not os.path.isfile(path):
            raise FileNotFoundError(f"image {path!r} does not exist")
    encoded = []
    for path in args.images:
        with open(path, "rb") as handle:
            encoded.append(handle.read())
    client = Client(args.server, grpc_target=args.grpc)
    try:
        rows = _classify(client, args, encoded)
    except ServingError as error:
        # no server, or the server refused: one line, like every other bad input
        option = f"--grpc {args.grpc}" if args.grpc else f"--server {args.server}"
        raise ValueError(f"{option}: {error}") from None
    for path, row in zip(args.images, rows):
        names = row.get("labels") or [str(c) for c in row["classes"]]
        pairs = list(zip(names, row["scores"]))[:args.top_k]
        print(f"{path}: " + ", ".join(f"{name} ({score:.3f})" for name, score in pairs))
    return 0


def _classify(client, args, encoded):
    if not args.grpc:
        return client.classify_images(args.model, encoded=encoded,
                                      version=args.version)["predictions"]
    outputs = client.grpc_predict(args.model, {BYTES_INPUT: encoded},
                                  signature_name=BYTES_SIGNATURE, version=args.version)
    rows = [{k: v[i].tolist() for k, v in outputs.items()} for i in range(len(encoded))]
    for row in rows:
        row["labels"] = [b.decode() for b in row.get("labels", [])] or None
    return rows
