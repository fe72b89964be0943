"""`keras-resnet serve [saved_models] [--port]`: TF Serving's REST (and gRPC) API, locally."""

from __future__ import annotations

import logging
import sys

from keras_resnet import checks
from keras_resnet.constants import (DEFAULT_EXPORT_DIR, DEFAULT_HOST, DEFAULT_MAX_BODY_MB,
                                    DEFAULT_POLL_SECONDS, DEFAULT_REST_PORT)

# serve()'s argument names -> this command's options, for errors such as a port in use
_OPTIONS = {"port": "--port", "host": "--host", "grpc_port": "--grpc-port",
            "poll_seconds": "--poll-seconds", "max_body_bytes": "--max-body-mb"}


def register(subparsers):
    """Adds the `serve` subcommand."""
    parser = subparsers.add_parser(
        "serve", help="serve the latest version of every exported model over REST (local)",
        description="Serves every model under SAVED_MODELS (the latest version of each) with TF "
                    "Serving's REST API: POST /v1/models/NAME[/versions/N|/labels/L]:predict, GET "
                    "/v1/models/NAME[/metadata], and with --grpc-port its gRPC API. New, "
                    "replaced and deleted versions are picked up without a restart. For "
                    "development; production is TF Serving.")
    parser.add_argument("base_dir", nargs="?", default=DEFAULT_EXPORT_DIR, metavar="SAVED_MODELS",
                        help="directory written by `keras-resnet export` "
                             f"(default: {DEFAULT_EXPORT_DIR})")
    parser.add_argument("--port", type=int, default=DEFAULT_REST_PORT,
                        help=f"REST port (default: {DEFAULT_REST_PORT})")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"interface to bind (default: {DEFAULT_HOST}, this machine only)")
    parser.add_argument("--grpc-port", type=int, default=None,
                        help="also serve TF Serving's gRPC PredictionService and ModelService "
                             "on this port")
    parser.add_argument("--poll-seconds", type=float, default=DEFAULT_POLL_SECONDS,
                        help=f"how often to look for new versions (default: "
                             f"{DEFAULT_POLL_SECONDS:g})")
    parser.add_argument("--max-body-mb", type=float, default=float(DEFAULT_MAX_BODY_MB),
                        help="largest request body in MiB; larger ones get 413 (default: "
                             f"{DEFAULT_MAX_BODY_MB})")
    parser.set_defaults(func=run)


def run(args):
    """Starts the server; returns when it is stopped (Ctrl-C / SIGTERM)."""
    from keras_resnet._tensorflow import assume_frozen_weights
    from keras_resnet.serving import AddressError, serve

    assume_frozen_weights()  # this process only serves: oneDNN may cache its weight layouts

    # MiB is this command's unit; the library takes bytes.
    max_body_mb = checks.positive_number(args.max_body_mb, "--max-body-mb", example="32")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    try:
        serve(args.base_dir, port=args.port, host=args.host, grpc_port=args.grpc_port,
              poll_seconds=args.poll_seconds,
              max_body_bytes=max(int(max_body_mb * 1024 * 1024), 1024))
    except AddressError as error:
        raise ValueError(f"{_OPTIONS.get(error.argument, error.argument)} {error.detail}") \
            from None
    except (ValueError, TypeError) as error:
        message = str(error)
        for argument, option in _OPTIONS.items():
            if message.startswith(f"{argument} "):
                message = option + message[len(argument):]
        raise type(error)(message) from None
    except KeyboardInterrupt:
        pass
    return 0
