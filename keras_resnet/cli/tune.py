"""`keras-resnet tune`: a KerasTuner search over depth, initializers and the other ResNet
choices; writes results.csv / results.png and exports the best model. Resumable (run the same
command again) and distributed (KERASTUNER_TUNER_ID / _ORACLE_IP / _ORACLE_PORT)."""

from __future__ import annotations

import sys

from keras_resnet.cli.arguments import add_reproducibility_arguments
from keras_resnet.constants import (DEFAULT_DATA, DEFAULT_EXPORT_DIR,
                                    DEFAULT_FAMILY, DEFAULT_MAX_TRIALS, DEFAULT_OBJECTIVE,
                                    DEFAULT_TUNE_EPOCHS, DEFAULT_TUNER,
                                    DEFAULT_TRIAL_PROCESS, DEFAULT_TRIALS_PER_PROCESS,
                                    DEFAULT_TUNE_STRATEGY,
                                    DEFAULT_TUNING_DIR, DEFAULT_WORKER_TIMEOUT, FAMILIES,
                                    TRIAL_PROCESSES, TUNE_STRATEGIES, TUNERS)


def register(subparsers):
    """Adds the `tune` subcommand."""
    parser = subparsers.add_parser(
        "tune", help="KerasTuner search over depth and initializers (resumable, distributed)",
        description="Searches ResNet depth, kernel initializer, zero-init residuals, block kind, "
                    "pre-activation, shortcut, width, activation, learning rate, weight decay and "
                    "batch size; each trial trains like `keras-resnet train`. Writes "
                    "DIRECTORY/PROJECT/results.csv and results.png and exports the best model "
                    "as a new SavedModel version under EXPORT/PROJECT/. Run the same command "
                    "again to resume a killed search. With KERASTUNER_TUNER_ID, "
                    "KERASTUNER_ORACLE_IP and KERASTUNER_ORACLE_PORT set it runs as the chief "
                    "(id 'chief') or a worker of a distributed search over a shared DIRECTORY.")
    parser.add_argument("--data", default=DEFAULT_DATA,
                        metavar="digits|cifar10|synthetic|PATH",
                        help=f"data set or a folder with one sub-folder per class "
                             f"({DEFAULT_DATA})")
    parser.add_argument("--family", choices=FAMILIES, default=DEFAULT_FAMILY,
                        help=f"cifar: 6n+2 depths; imagenet: per-stage depths ({DEFAULT_FAMILY})")
    parser.add_argument("--tuner", choices=TUNERS, default=DEFAULT_TUNER,
                        help=f"search ({DEFAULT_TUNER})")
    parser.add_argument("--max-trials", type=int, default=DEFAULT_MAX_TRIALS,
                        help=f"trials of the search ({DEFAULT_MAX_TRIALS})")
    _search_arguments(parser)
    _process_arguments(parser)
    parser.set_defaults(func=run)


def _search_arguments(parser):
    parser.add_argument("--epochs", type=int, default=DEFAULT_TUNE_EPOCHS,
                        help=f"training epochs per trial ({DEFAULT_TUNE_EPOCHS})")
    parser.add_argument("--objective", default=DEFAULT_OBJECTIVE,
                        help=f"metric to optimize ({DEFAULT_OBJECTIVE}; val_loss, accuracy, ...)")
    parser.add_argument("--directory", default=DEFAULT_TUNING_DIR,
                        help=f"parent of the search ({DEFAULT_TUNING_DIR})")
    parser.add_argument("--project", default=None,
                        help="search name (default FAMILY-DATA-TUNER)")
    parser.add_argument("--export", default=DEFAULT_EXPORT_DIR, metavar="DIR",
                        help=f"SavedModel base directory for the best model "
                             f"({DEFAULT_EXPORT_DIR})")
    parser.add_argument("--no-export", action="store_true", help="skip the SavedModel export")
    add_reproducibility_arguments(parser, "trial scores")
    parser.add_argument("--overwrite", action="store_true",
                        help="start the search over instead of resuming it")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE[,VALUE...]",
                        dest="settings",
                        help="fix (one value) or narrow (several) a hyperparameter, e.g. "
                             "--set depth=8,14 --set initializer=he_normal,orthogonal "
                             "--set learning_rate=0.05; repeatable")


def _process_arguments(parser):
    parser.add_argument("--steps-per-epoch", type=int, default=None,
                        help="train on at most this many batches per epoch (quick searches)")
    parser.add_argument("--worker-timeout", type=float, default=DEFAULT_WORKER_TIMEOUT,
                        metavar="SECONDS",
                        help="distributed: a worker silent this long counts as dead, and a "
                             f"worker waits this long for the chief ({DEFAULT_WORKER_TIMEOUT:g})")
    parser.add_argument("--strategy", choices=TUNE_STRATEGIES, default=DEFAULT_TUNE_STRATEGY,
                        help="tf.distribute strategy of every trial (KerasTuner's "
                             "distribution_strategy): mirrored = all GPUs of this machine; auto "
                             f"= mirrored when more than one GPU is visible ({DEFAULT_TUNE_STRATEGY})")
    parser.add_argument("--trial-process", choices=TRIAL_PROCESSES,
                        default=DEFAULT_TRIAL_PROCESS,
                        help="where trials run: same = this process (memory grows with "
                             "every trial); fresh = a new process per trial, served by this "
                             "one's oracle; recycled = a process per --trials-per-process "
                             "trials (flat memory, TensorFlow starts once per process); auto = "
                             f"recycled for data given by name or path ({DEFAULT_TRIAL_PROCESS})")
    parser.add_argument("--trials-per-process", type=int, default=DEFAULT_TRIALS_PER_PROCESS,
                        metavar="K", help="trials one recycled trial process runs "
                                          f"({DEFAULT_TRIALS_PER_PROCESS})")
    parser.add_argument("--verbose", type=int, choices=(0, 1, 2), default=0,
                        help="model.fit verbosity inside trials (0)")


def _value(text):
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text.strip()


def parse_settings(settings):
    """``["depth=8,14", "initializer=he_normal"]`` -> ``{"depth": [8, 14], "initializer":
    "he_normal"}`` (one value fixes, several narrow)."""
    fixed = {}
    for setting in settings:
        name, sep, values = setting.partition("=")
        if not sep or not name.strip():
            raise ValueError(f"--set takes NAME=VALUE[,VALUE...]; got {setting!r}")
        parsed = [_value(v) for v in values.split(",") if v.strip()]
        if not parsed:
            raise ValueError(f"--set {name.strip()} has an empty choice list; give at least "
                             "one value")
        fixed[name.strip()] = parsed[0] if len(parsed) == 1 else parsed
    return fixed


def run(args):
    """Runs the search and prints the results table and the best trial."""
    fixed = parse_settings(args.settings)
    from keras_resnet.tuning import tune

    def log(message):
        print(message, flush=True)

    try:
        result = tune(args.data, family=args.family, tuner=args.tuner,
                      max_trials=args.max_trials, epochs=args.epochs, objective=args.objective,
                      directory=args.directory, project_name=args.project, seed=args.seed,
                      deterministic=args.deterministic, overwrite=args.overwrite,
                      export_dir=None if args.no_export else args.export,
                      steps_per_epoch=args.steps_per_epoch, worker_timeout=args.worker_timeout,
                      verbose=args.verbose, strategy=args.strategy,
                      trial_process=args.trial_process,
                      trials_per_process=args.trials_per_process, log=log, **fixed)
    except RuntimeError as error:
        print(f"keras-resnet tune: error: {error}", file=sys.stderr)
        return 1
    if result.role == "worker":
        print(f"worker done: ran trial(s) {', '.join(result.ran) or 'none'} of the search in "
              f"{result.project_dir}")
        return 0
    from keras_resnet.tuning.results import format_table

    if result.distribution:
        print(f"trials trained with {result.distribution['strategy']} "
              f"({result.distribution['replicas']} replica(s))")
    print(f"\n{len(result.rows)} trials in {result.project_dir} (ranked by {args.objective}):")
    print(format_table(result.rows, result.columns, args.objective,
                       direction=result.direction))
    if result.best is not None:
        best = result.best
        values = ", ".join(f"{c}={best[c]}" for c in result.columns
                           if c not in ("trial_id", "status", "score", "reason", "tuner_id",
                                        "seconds", "epochs")
                           and best.get(c) not in (None, ""))
        print(f"\nbest trial {best['trial_id']}: {args.objective} {best['score']:.4f} "
              f"({values})")
    else:
        print("\nno trial completed; see the reasons above")
    print(f"  results   {result.results_csv}")
    print(f"  plot      {result.results_png}")
    if result.export_path:
        print(f"  SavedModel {result.export_path}")
    return 0 if result.best is not None else 1
