"""`keras-resnet convert SRC --out MODEL.keras`: a torchvision/timm checkpoint as a .keras file."""

from __future__ import annotations

import os
import re

from keras_resnet.constants import TORCH_CHECKPOINT_EXTENSIONS


def register(subparsers):
    """Adds the `convert` subcommand."""
    parser = subparsers.add_parser(
        "convert", help="convert a torchvision/timm ResNet checkpoint into a .keras model",
        description="Reads a torchvision or timm ResNet state_dict (.safetensors; .pth/.pt/.bin "
                    "need torch), builds the matching keras_resnet model from its keys and "
                    "shapes, loads every tensor and writes MODEL.keras atomically. The model "
                    "takes raw 0..255 RGB pixels unless --preprocessing none.")
    parser.add_argument("source", metavar="SRC",
                        help="checkpoint file: " + ", ".join(TORCH_CHECKPOINT_EXTENSIONS))
    parser.add_argument("--out", required=True, metavar="MODEL.keras",
                        help="the .keras file to write")
    parser.add_argument("--input-shape", default=None, metavar="H,W,C",
                        help="input shape (default: 224,224,C)")
    parser.add_argument("--classes", type=int, default=None,
                        help="head size; another number than the checkpoint's starts a new "
                             "head (everything but fc is loaded)")
    parser.add_argument("--preprocessing", choices=("torch", "none"), default="torch",
                        help="input normalization inside the model: torch (ImageNet mean/std "
                             "on raw 0..255 pixels, the default) or none")
    parser.add_argument("--logits", action="store_true",
                        help="end with logits instead of softmax probabilities")
    parser.add_argument("--name", default=None,
                        help="model name (default: the checkpoint file's name, e.g. "
                             "resnet50 for resnet50.safetensors)")
    parser.set_defaults(func=run)


def _input_shape(text):
    if text is None:
        return None
    parts = text.split(",")
    try:
        shape = tuple(int(part) for part in parts)
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"--input-shape must be H,W,C with three positive ints (e.g. "
                         f"224,224,3); got {text!r}")
    return shape


def _model_name(source):
    """The checkpoint file's name without its extension, as a Keras name."""
    stem = os.path.basename(source)
    for extension in TORCH_CHECKPOINT_EXTENSIONS:
        if stem.lower().endswith(extension):
            stem = stem[:-len(extension)]
            break
    return re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "resnet"


def run(args):
    """Converts the checkpoint and prints what was mapped."""
    if not args.out.endswith(".keras"):
        raise ValueError(f"--out must name a .keras file; got {args.out!r}")
    if not args.source.lower().endswith(TORCH_CHECKPOINT_EXTENSIONS):
        raise ValueError(f"SRC must be a torch checkpoint ({', '.join(TORCH_CHECKPOINT_EXTENSIONS)}"
                         f"); got {args.source!r}")
    if not os.path.isfile(args.source):
        raise FileNotFoundError(f"checkpoint {args.source!r} does not exist")
    if args.classes is not None and args.classes < 1:
        raise ValueError(f"--classes must be an int >= 1; got {args.classes}")
    shape = _input_shape(args.input_shape)
    from keras_resnet.files import atomic_path
    from keras_resnet.modeling.checkpoints import from_torch_checkpoint
    from keras_resnet.modeling.torch_weights import describe_load

    preprocessing = None if args.preprocessing == "none" else args.preprocessing
    try:
        model = from_torch_checkpoint(args.source, input_shape=shape, classes=args.classes,
                                      classifier_activation=None if args.logits else "softmax",
                                      preprocessing=preprocessing,
                                      name=args.name or _model_name(args.source))
    except ImportError as error:  # a .pth without torch: a usage error, not a crash
        raise ValueError(str(error)) from None
    result = model.pretrained_load
    architecture = result.architecture
    kind = "bottleneck" if architecture.bottleneck else "basic"
    print(f"{args.source}: {kind} blocks, stage_depths {architecture.stage_depths}, widths "
          f"{architecture.widths}, stem={architecture.stem}, shortcut={architecture.shortcut}, "
          f"classes {architecture.classes}")
    weights = sum(not key.endswith("num_batches_tracked") for key in result.loaded)
    print(f"{describe_load(result.loaded, result.skipped, weights, model.name)}; "
          f"{model.count_params():,} parameters, input {model.input_shape[1:]}")
    if result.skipped:
        print(f"skipped {', '.join(result.skipped)}: a new {model.output_shape[-1]}-class head")
    print(f"preprocessing: {args.preprocessing}")
    with atomic_path(args.out) as temporary:
        model.save(temporary)
    print(f"wrote {args.out}")
    return 0
