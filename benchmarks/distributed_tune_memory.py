"""The tuner's resident memory (RSS) over a search of many tiny trials on digits.

Each trial records the RSS of the process that ran it (``rss_mib`` in ``trial_runs.jsonl``);
this script runs one search and prints the RSS after trials 2 and N and the growth between
them, the highest RSS of any process that ran trials, and the wall time, for the in-process
search (``--trial-process same``), trials in fresh processes (``fresh``) or in recycled
processes of up to K trials each (``recycled --trials-per-process K``, the default), where it
also reports the parent's (the tuner's) RSS.

    .venv/bin/python benchmarks/distributed_tune_memory.py --trials 20
    .venv/bin/python benchmarks/distributed_tune_memory.py --trials 20 --trial-process same
    .venv/bin/python benchmarks/distributed_tune_memory.py --trials 20 --trial-process fresh
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--trial-process", choices=("same", "fresh", "recycled"),
                        default="recycled")
    parser.add_argument("--trials-per-process", type=int, default=None, metavar="K",
                        help="recycled: trials per process (default: the library's)")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    from keras_resnet.tuning import tune
    from keras_resnet.tuning.results import read_trial_runs, rss_mib

    options = dict(epochs=1, steps_per_epoch=2, depth=8, width_multiplier=0.5, batch_size=32,
                   max_trials=args.trials, export_dir=None, project_name="memory",
                   trial_process=args.trial_process)
    if args.trials_per_process is not None:
        options["trials_per_process"] = args.trials_per_process
    parent = []  # the tuner's own RSS after each trial (fresh, recycled: the parent process)

    def log(message):
        if " done in process " in message:
            parent.append(rss_mib())

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        result = tune("digits", directory=directory, log=log, **options)
        runs = read_trial_runs(result.project_dir)
    rss = [run["rss_mib"] for run in runs]
    figures = {
        "trial_process": args.trial_process, "trials": len(runs),
        "trial_rss_mib": rss, "after_2": rss[1], f"after_{len(rss)}": rss[-1],
        "growth_mib": round(rss[-1] - rss[1], 1),
        "max_trial_rss_mib": max(rss),
        "max_growth_mib": round(max(rss[1:]) - rss[1], 1),
        "trials_per_process": result.config.trials_per_process
        if args.trial_process == "recycled" else None,
        "distinct_pids": len({run["pid"] for run in runs}),
        "parent_rss_mib_per_trial": parent,
        "parent_growth_mib": round(parent[-1] - parent[1], 1) if len(parent) > 1 else None,
        "parent_rss_mib": rss_mib(),
        "parent_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(figures, indent=2))
    if args.json:
        with open(args.json, "w") as file:
            json.dump(figures, file, indent=2)


if __name__ == "__main__":
    main()
