"""`keras-resnet manifest NAME [-- COMMAND ...]`: a Kubeflow TFJob for multi-worker GPU
training (``keras_resnet.distribute.manifest``, whose name this module avoids), written to
``--out`` or printed."""

from __future__ import annotations

import sys

from keras_resnet.constants import (DEFAULT_TFJOB_IMAGE as DEFAULT_IMAGE,
                                    DEFAULT_TFJOB_MOUNT as DEFAULT_MOUNT,
                                    DEFAULT_TFJOB_VOLUME_CLAIM as DEFAULT_VOLUME_CLAIM)


def register(subparsers):
    """Adds the `manifest` subcommand."""
    parser = subparsers.add_parser(
        "manifest", usage="keras-resnet manifest [options] NAME [-- COMMAND ...]",
        help="write a Kubeflow TFJob for multi-worker GPU training",
        description="Writes a Kubeflow TFJob (one Chief and --workers Worker pods sharing a "
                    "volume) whose pods run keras-resnet train --strategy multi-worker.",
        epilog="Anything after -- is the pods' command (default: keras-resnet train --strategy "
               "multi-worker on cifar10, runs and export under the volume).")
    parser.add_argument("name", help="job name (a Kubernetes name)")
    parser.add_argument("--workers", type=int, default=1,
                        help="Worker replicas besides the Chief (1)")
    parser.add_argument("--gpus-per-worker", type=int, default=1, help="GPUs per pod (1)")
    parser.add_argument("--image", default=DEFAULT_IMAGE, help=f"image ({DEFAULT_IMAGE})")
    parser.add_argument("--volume-claim", default=DEFAULT_VOLUME_CLAIM,
                        help=f"PersistentVolumeClaim shared by the pods ({DEFAULT_VOLUME_CLAIM})")
    parser.add_argument("--mount-path", default=DEFAULT_MOUNT,
                        help=f"where it is mounted ({DEFAULT_MOUNT})")
    parser.add_argument("--namespace", default=None, help="the job's namespace (kubectl's)")
    parser.add_argument("--out", default=None, help="write here (default: print)")
    # keras_resnet.cli.main puts the words after -- into args.pod_command
    parser.set_defaults(func=run, pod_command=[], takes_command=True)


def run(args):
    """Writes or prints the manifest."""
    from keras_resnet import files
    from keras_resnet.distribute.manifest import tfjob_manifest

    command = args.pod_command
    text = tfjob_manifest(args.name, workers=args.workers,
                          gpus_per_worker=args.gpus_per_worker, image=args.image,
                          command=command or None, volume_claim=args.volume_claim,
                          mount_path=args.mount_path, namespace=args.namespace)
    if args.out:
        files.write_text(args.out, text)
        print(f"wrote {args.out}")
    else:
        sys.stdout.write(text)
    return 0
