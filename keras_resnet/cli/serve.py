"""`keras-resnet serve [saved_models] [--port]`: a local TF-Serving-shaped REST server (KServe)."""

from __future__ import annotations

import sys


def register(subparsers):
    """Adds the `serve` subcommand."""
    parser = subparsers.add_parser(
        "serve", help="serve the latest version of every exported model over REST (local)",
        description="Serves every model under SAVED_MODELS (the latest version of each) through "
                    "KServe's Python model server with TF Serving's REST API: POST "
                    "/v1/models/NAME:predict, GET /v1/models/NAME[/metadata]. New versions are "
                    "picked up without a restart. For development; production is TF Serving.")
    parser.add_argument("base_dir", nargs="?", default="saved_models", metavar="SAVED_MODELS",
                        help="directory written by `keras-resnet export` (default: saved_models)")
    parser.add_argument("--port", type=int, default=8501, help="REST port (default: 8501)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="interface to bind (default: 127.0.0.1, this machine only)")
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="also serve TF Serving's gRPC PredictionService on this port")
    parser.add_argument("--poll-seconds", type=float, default=2.0,
                        help="how often to look for new versions (default: 2)")
    parser.add_argument("--max-body-mb", type=float, default=32.0,
                        help="largest request body in MiB; larger ones get 413 (default: 32)")
    parser.set_defaults(func=run)


def run(args):
    """Starts the server; returns when it is stopped (Ctrl-C / SIGTERM)."""
    from keras_resnet.serving import serve

    try:
        serve(args.base_dir, port=args.port, host=args.host, grpc_port=args.grpc_port,
              poll_seconds=args.poll_seconds, max_body_bytes=int(args.max_body_mb * 1024 * 1024))
    except ImportError as error:
        print(f"keras-resnet serve: error: {error}", file=sys.stderr)
        return 2
    return 0
