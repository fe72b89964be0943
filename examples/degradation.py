"""The degradation problem: a deeper plain network trains *worse*; a deeper ResNet does not.

Trains CIFAR-style plain-20, plain-56, ResNet-20 and ResNet-56 (He et al. 2015, section 4.2)
with one recipe and one seed, and measures the training error after every epoch: the error of
the model as it stands, in inference mode, on every (un-augmented) training image. Writes

* ``degradation.png``: training error against epoch, plain networks left, ResNets right;
* ``degradation.json``: ``{"plain-20": error, "plain-56": ..., "resnet-20": ..., "resnet-56": ...}``
  (final training errors) plus the curves, the recipe and the run times under ``"meta"``.

Data: the embedded 8x8 digits, or CIFAR-10 when it is already in Keras' cache (never downloaded;
``--quick`` always uses digits). Recipe, the same for all four: ``keras_resnet.modeling.recipe
.compile_model`` (SGD, momentum 0.9, weight decay 1e-4) with the paper's step schedule (÷10 at
50% and 75% of training), learning rate 0.1, batch 64, no augmentation. The ResNets start with
``zero_init_residual=True`` (every block the identity); the plain twins cannot, a plain block
with that switch outputs zeros (see ``examples/identity.py``).

Run:  python examples/degradation.py [--quick] [--out DIR] [--seed N]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from keras_resnet.data import CIFAR10_CACHE_NAME, load_dataset  # noqa: E402
from keras_resnet.diagnostics import TrainingError  # noqa: E402
from keras_resnet.modeling.recipe import PaperSchedule, build_model, compile_model  # noqa: E402

MODELS = {"plain-20": "cifar-plain20", "plain-56": "cifar-plain56",
          "resnet-20": "cifar-resnet20", "resnet-56": "cifar-resnet56"}
# The deeper ResNet may end this much above the shallower one and still count as "no worse".
TOLERANCE = 0.01
QUICK = {"epochs": 10, "batch_size": 64, "learning_rate": 0.1}
FULL = {"digits": {"epochs": 30, "batch_size": 64, "learning_rate": 0.1},
        "cifar10": {"epochs": 160, "batch_size": 128, "learning_rate": 0.1}}


def cifar10_cached():
    """True when CIFAR-10 is already in Keras' cache (nothing is downloaded)."""
    home = os.environ.get("KERAS_HOME", os.path.expanduser("~/.keras"))
    return os.path.isdir(os.path.join(home, "datasets", CIFAR10_CACHE_NAME,
                                      "cifar-10-batches-py"))


def train_one(preset, data, *, epochs, learning_rate, seed, weight_decay=1e-4):
    """Trains one network with the shared recipe; returns its training error per epoch."""
    keras.utils.set_random_seed(seed)
    # A residual block can start as the identity (gamma = 0 in its branch's last BN); a plain
    # block cannot (it would output zeros), so only the ResNets get the switch.
    options = {} if "plain" in preset else {"zero_init_residual": True}
    model = build_model(preset, data, **options)
    schedule = PaperSchedule(learning_rate, total_steps=epochs * data.steps_per_epoch)
    compile_model(model, learning_rate=schedule, weight_decay=weight_decay, jit_compile=False)
    error = TrainingError(data.train)
    model.fit(data.train, epochs=epochs, callbacks=[error], verbose=0)
    return error.errors


def plot(curves, path, title):
    """Training error (%) against epoch: plain networks left, ResNets right."""
    fig, axes = plt.subplots(1, 2, figsize=(8.8, 3.4), dpi=80, sharey=True)
    for ax, kind in zip(axes, ("plain", "resnet")):
        for depth, style in (("20", "--"), ("56", "-")):
            errors = curves[f"{kind}-{depth}"]
            ax.plot(range(1, len(errors) + 1), [100 * e for e in errors], style,
                    label=f"{kind}-{depth}", color="C0" if depth == "20" else "C3")
        ax.set_title("plain networks" if kind == "plain" else "ResNets")
        ax.set_xlabel("epoch")
        ax.grid(True, alpha=0.3)
        ax.legend()
    axes[0].set_ylabel("training error (%)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"digits, {QUICK['epochs']} epochs (a few minutes on 2 CPU cores)")
    parser.add_argument("--out", default=".", help="directory for degradation.png/.json")
    parser.add_argument("--seed", type=int, default=0, help="one seed for all four networks")
    parser.add_argument("--data", choices=("auto", "digits", "cifar10"), default="auto",
                        help="auto: CIFAR-10 when in Keras' cache, else digits (--quick: digits)")
    parser.add_argument("--epochs", type=int, default=None, help="override the epochs")
    args = parser.parse_args(argv)
    if args.seed < 0:
        parser.error(f"--seed must be >= 0; got {args.seed}")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs must be >= 1; got {args.epochs}")
    name = args.data
    if name == "auto":
        name = "cifar10" if cifar10_cached() and not args.quick else "digits"
    recipe = dict(QUICK if args.quick and name == "digits" else FULL[name])
    if args.epochs:
        recipe["epochs"] = args.epochs
    # Un-augmented training data: the networks are compared on fitting the training set.
    data = load_dataset(name, batch_size=recipe["batch_size"], seed=args.seed, augment=False,
                        validation_split=0.0)
    print(data.describe())
    print(f"recipe: SGD momentum 0.9, lr {recipe['learning_rate']} (÷10 at 50% and 75%), "
          f"weight decay 1e-4, batch {recipe['batch_size']}, {recipe['epochs']} epochs, "
          f"seed {args.seed}")

    curves, seconds = {}, {}
    for label, preset in MODELS.items():
        start = time.perf_counter()
        curves[label] = train_one(preset, data, epochs=recipe["epochs"],
                                  learning_rate=recipe["learning_rate"], seed=args.seed)
        seconds[label] = round(time.perf_counter() - start, 1)
        print(f"{label:10} training error {curves[label][-1]:7.2%}   ({seconds[label]:.0f} s; "
              f"per epoch: {' '.join(f'{e:.3f}' for e in curves[label])})", flush=True)

    final = {label: errors[-1] for label, errors in curves.items()}
    plain_degrades = final["plain-56"] > final["plain-20"]
    resnet_holds = final["resnet-56"] <= final["resnet-20"] + TOLERANCE
    print(f"\nplain-56 {'>' if plain_degrades else '<='} plain-20: "
          f"{final['plain-56']:.2%} vs {final['plain-20']:.2%}"
          f"  ({'degradation' if plain_degrades else 'NO degradation'})")
    print(f"resnet-56 {'<=' if resnet_holds else '>'} resnet-20 + {TOLERANCE:.0%}: "
          f"{final['resnet-56']:.2%} vs {final['resnet-20']:.2%}")
    os.makedirs(args.out, exist_ok=True)
    title = (f"{data.name}: training error, {recipe['epochs']} epochs, same recipe and seed")
    plot(curves, os.path.join(args.out, "degradation.png"), title)
    result = {**final, "meta": {
        "data": data.name, "train_size": data.train_size, "seed": args.seed,
        "recipe": {**recipe, "optimizer": "SGD momentum 0.9", "weight_decay": 1e-4,
                   "schedule": "step ÷10 at 50% and 75%", "augmentation": None,
                   "resnets": "zero_init_residual=True"},
        "training_error": "inference-mode error on every training image after each epoch",
        "tolerance": TOLERANCE, "plain_degrades": plain_degrades,
        "resnet_no_worse": resnet_holds, "curves": curves, "seconds": seconds}}
    with open(os.path.join(args.out, "degradation.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {os.path.join(args.out, 'degradation.png')} and degradation.json")
    return result


if __name__ == "__main__":
    main()
