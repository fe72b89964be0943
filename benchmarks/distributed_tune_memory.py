"""The tuner's resident memory (RSS) over a search of many tiny trials on digits.

Each trial records the RSS of the process that ran it (``rss_mib`` in ``trial_runs.jsonl``);
this script runs one search and prints the RSS after trials 2 and N and the growth between
them, for the in-process search (``--trial-process same``) or trials in fresh processes
(``--trial-process fresh``, the default), where it also reports the parent's RSS.

    .venv/bin/python benchmarks/distributed_tune_memory.py --trials 20
    .venv/bin/python benchmarks/distributed_tune_memory.py --trials 20 --trial-process same
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
    parser.add_argument("--trial-process", choices=("same", "fresh"), default="fresh")
    parser.add_argument("--json", default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    from keras_resnet.tuning import tune
    from keras_resnet.tuning.results import read_trial_runs, rss_mib

    options = dict(epochs=1, steps_per_epoch=2, depth=8, width_multiplier=0.5, batch_size=32,
                   max_trials=args.trials, export_dir=None, project_name="memory")
    if args.trial_process == "fresh":
        options["trial_process"] = "fresh"
    parent = []  # the tuner's own RSS after each trial (fresh: the parent process)

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
