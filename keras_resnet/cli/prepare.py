"""`keras-resnet prepare SRC DEST`: a folder of class sub-folders -> sharded TFRecords."""

from __future__ import annotations

from keras_resnet import constants


def register(subparsers):
    """Adds the `prepare` subcommand."""
    parser = subparsers.add_parser(
        "prepare", help="convert a folder of class sub-folders into sharded TFRecords",
        description="Writes DEST/train-00000-of-000NN ... and validation-... shards in the "
                    "TF Model Garden / ImageNet TFRecord format (image/encoded, image/format, "
                    "image/class/label, image/class/text, image/height, image/width, "
                    "image/filename) and DEST/dataset.json. Non-image files are ignored, images "
                    "that do not decode are skipped and listed. Run it again after an "
                    "interruption: finished shards are kept. Train with --data DEST.")
    parser.add_argument("source", metavar="SRC", help="folder with one sub-folder per class")
    parser.add_argument("dest", metavar="DEST", help="output directory")
    parser.add_argument("--shards", type=int, default=constants.DEFAULT_SHARDS,
                        help=f"training shards (default {constants.DEFAULT_SHARDS}; "
                             "validation gets as many as keep shards equally large)")
    parser.add_argument("--validation-split", type=float,
                        default=constants.DEFAULT_PREPARE_VALIDATION_SPLIT,
                        help="fraction of the images held out for validation "
                             f"(default {constants.DEFAULT_PREPARE_VALIDATION_SPLIT})")
    parser.add_argument("--seed", type=int, default=0, help="fixes the split (default 0)")
    parser.add_argument("--label-offset", type=int, default=0,
                        help="added to every label (1: the ImageNet TPU tools' convention)")
    parser.add_argument("--color-mode", choices=constants.PREPARE_COLOR_MODES, default="rgb",
                        help="rgb (default) or grayscale (one channel)")
    parser.add_argument("--strict", action="store_true",
                        help="fail on an image that does not decode instead of skipping it")
    parser.add_argument("--workers", type=int, default=2,
                        help="shards written at once (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args):
    """Runs `prepare` with a progress bar and prints its report."""
    import keras

    from keras_resnet.data import folders, shards

    total = len(folders.list_images(args.source, folders.PREPARE_FORMATS)[1]) \
        if folders.is_class_folder(args.source) else 0
    bar = None if args.quiet or not total else keras.utils.Progbar(total, unit_name="image")
    report = shards.prepare(
        args.source, args.dest, shards=args.shards, validation_split=args.validation_split,
        seed=args.seed, label_offset=args.label_offset, color_mode=args.color_mode,
        strict=args.strict, workers=args.workers, progress=bar.add if bar else None)
    counts = ", ".join(f"{n} {split}" for split, n in report.counts.items())
    print(f"wrote {counts} images into {sum(map(len, report.shards.values()))} shards in "
          f"{report.dest} ({report.reused} kept from an earlier run, {report.reencoded} "
          f"re-encoded) in {report.seconds:.1f} s; shards {report.shard_bytes / 2**20:.1f} MiB "
          f"for {report.source_bytes / 2**20:.1f} MiB of source images")
    if report.skipped:
        print(f"skipped {len(report.skipped)} image(s) that do not decode:")
        for file, reason in report.skipped:
            print(f"  {file}: {reason}")
    return 0
