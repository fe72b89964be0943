"""`keras-resnet summary [MODEL ...]`: depth, parameters, multiply-adds and layers per model."""

from __future__ import annotations

from keras_resnet import constants

DEFAULT_MODELS = constants.SUMMARY_MODELS


def register(subparsers):
    """Adds the `summary` subcommand."""
    parser = subparsers.add_parser(
        "summary", help="table of depth, parameters, multiply-adds and layers per model",
        description="Builds each model and counts its parameters and multiply-adds from its own "
                    "layers. Valid names: " + ", ".join(constants.MODEL_NAMES))
    parser.add_argument("models", nargs="*", metavar="MODEL", default=list(DEFAULT_MODELS),
                        help="model names (default: the ImageNet ResNet-18 ... 152)")
    parser.add_argument("--stride-on", choices=constants.STRIDE_ON, default=None,
                        help="bottleneck conv carrying the stride: 1x1 (the paper's Table 1) or "
                             "3x3 (torchvision; the models' default)")
    parser.add_argument("--classes", type=int, default=None, help="head size (default: preset)")
    parser.set_defaults(func=run)


def run(args):
    """Prints the table."""
    from keras_resnet.modeling import presets

    for name in args.models:
        presets.check_model_name(name, "MODEL")
    from keras_resnet.modeling.models import build
    from keras_resnet.modeling.stats import model_stats

    header = ("model", "depth", "trainable params", "total params", "multiply-adds", "layers")
    print(f"{header[0]:<24}{header[1]:>6}{header[2]:>18}{header[3]:>16}{header[4]:>16}"
          f"{header[5]:>8}")
    for name in args.models:
        options = {"stride_on": args.stride_on} if args.stride_on else {}
        if args.classes is not None:
            options["classes"] = args.classes
        stats = model_stats(build(name, **options))
        macs = f"{stats['multiply_adds'] / 1e9:.2f} G" if stats["multiply_adds"] else "-"
        print(f"{name:<24}{stats['depth']:>6}{stats['trainable_params']:>18,}"
              f"{stats['total_params']:>16,}{macs:>16}{stats['layers']:>8}", flush=True)
    return 0
