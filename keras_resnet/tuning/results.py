"""The search's report: ``results.csv`` (one row per finished trial) and ``results.png``."""

from __future__ import annotations

import csv
import json
import math
import os
import re

from keras_resnet import files
from keras_resnet.tuning.space import layer_count

TRIAL_INFO = "keras_resnet.json"   # written by the process that ran the trial, in its trial dir
TRIAL_RUNS = "trial_runs.jsonl"  # one line per trial run, appended by whoever ran it
FIRST_COLUMNS = ("trial_id", "status", "score")
LAST_COLUMNS = ("layers", "params", "seconds", "epochs", "tuner_id", "reason")


def write_trial_info(trial_dir, info):
    """Writes what a trial's runner knows (parameters, seconds, tuner id, reason) atomically."""
    files.write_text(os.path.join(trial_dir, TRIAL_INFO), json.dumps(info, indent=2))


def rss_mib():
    """This process's resident memory in MiB (``/proc/self/statm``; elsewhere the peak RSS)."""
    try:
        with open("/proc/self/statm") as file:
            pages = int(file.read().split()[1])
        return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        import resource
        import sys

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def log_trial_run(project_dir, info):
    """Appends one line per trial run to ``trial_runs.jsonl`` (a trial run twice shows twice)."""
    with open(os.path.join(project_dir, TRIAL_RUNS), "a") as file:
        file.write(json.dumps(info, sort_keys=True) + "\n")


def read_trial_runs(project_dir):
    """The entries of ``trial_runs.jsonl``: one dict per trial run, in the order they ended."""
    path = os.path.join(project_dir, TRIAL_RUNS)
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [json.loads(line) for line in file if line.strip()]


def failure_reason(trial):
    """Why a trial did not complete (the last line of its message); "" for a completed one."""
    return "" if str(trial.status) == "COMPLETED" else _reason(trial.message)


def _reason(message):
    """The last line of a KerasTuner failure message (a traceback): the error itself."""
    lines = [line.strip() for line in (message or "").strip().splitlines() if line.strip()]
    # "keras_tuner.src.errors.FailedTrialError: loss became nan ..." -> "FailedTrialError: ..."
    return re.sub(r"^(?:\w+\.)+(\w+:)", r"\1", lines[-1]) if lines else ""


def collect_rows(oracle, project_dir, family, hp_names):
    """One dict per finished trial (completed or failed), in the order they finished.

    Args:
        oracle: the search's ``keras_tuner.Oracle`` (not a worker's client).
        project_dir: the search directory (for each trial's ``keras_resnet.json``).
        family: ``"cifar"`` or ``"imagenet"`` (for the ``layers`` column).
        hp_names: the hyperparameter columns, in order.

    Returns:
        ``(rows, columns)``.
    """
    declared = [hp.name for hp in oracle.get_space().space]
    names = [n for n in hp_names if n in declared]  # no column for a name never declared
    # Then KerasTuner's own (tuner/epochs, tuner/bracket ... for Hyperband).
    extra = declared + [n for t in oracle.trials.values() for n in t.hyperparameters.values]
    for name in extra:
        if name not in names:
            names.append(name)
    rows = []
    for trial_id in oracle.end_order:
        trial = oracle.trials[trial_id]
        if trial.status not in ("COMPLETED", "FAILED"):
            continue
        info_path = os.path.join(project_dir, f"trial_{trial_id}", TRIAL_INFO)
        info = {}
        if os.path.exists(info_path):
            with open(info_path) as file:
                info = json.load(file)
        values = trial.hyperparameters.values
        score = trial.score if trial.status == "COMPLETED" else None
        row = {"trial_id": trial_id, "status": trial.status.lower(),
               "score": None if score is None or not math.isfinite(score) else float(score)}
        for name in names:
            row[name] = values.get(name)
        try:
            row["layers"] = layer_count(values, family)
        except (KeyError, ValueError, TypeError):
            row["layers"] = None
        row.update(params=info.get("params"), seconds=info.get("seconds"),
                   epochs=info.get("epochs"), tuner_id=info.get("tuner_id"),
                   reason=failure_reason(trial) or info.get("reason") or "")
        rows.append(row)
    return rows, list(FIRST_COLUMNS) + names + list(LAST_COLUMNS)


def write_csv(rows, columns, path):
    """Writes the rows (inactive hyperparameters as empty cells) atomically to ``path``."""
    with files.atomic_path(path) as temporary, open(temporary, "w", newline="") as file:
        writer = csv.DictWriter(file, columns, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return path


def read_csv(path):
    """Reads ``results.csv`` back as a list of dicts of strings."""
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def plot(rows, path, objective, title=None):
    """Score against depth, one colour per initializer; failed trials as crosses at the bottom.

    Args:
        rows: from ``collect_rows``.
        path: the ``.png`` file.
        objective: the score's name (the y label).
        title: figure title.

    Returns:
        ``path``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    initializers = sorted({str(r.get("initializer")) for r in rows})
    colours = plt.get_cmap("tab10")
    scores = [r["score"] for r in rows if r["score"] is not None]
    floor = min(scores) if scores else 0.0
    for i, initializer in enumerate(initializers):
        mine = [r for r in rows if str(r.get("initializer")) == initializer]
        done = [r for r in mine if r["score"] is not None and r["layers"] is not None]
        failed = [r for r in mine if r["score"] is None and r["layers"] is not None]
        colour = colours(i % 10)
        axis.scatter([r["layers"] for r in done], [r["score"] for r in done], color=colour,
                     label=initializer, s=40, alpha=0.85)
        if failed:
            axis.scatter([r["layers"] for r in failed], [floor] * len(failed), color=colour,
                         marker="x", s=50, label=f"{initializer} (failed)")
    axis.set_xlabel("depth (weighted layers)")
    axis.set_ylabel(objective)
    axis.grid(alpha=0.3)
    if rows:
        axis.legend(title="initializer", fontsize=8)
    axis.set_title(title or f"{len(rows)} trials")
    figure.tight_layout()
    with files.atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=100, format="png")
    plt.close(figure)
    return path


def format_table(rows, columns, objective, *, direction, limit=None):
    """The rows as a text table, best score first (failed trials last).

    Args:
        rows, columns: from ``collect_rows``.
        objective: the score's name (the header).
        direction: the objective's ``"min"`` or ``"max"`` (``TuneResult.direction``, the
            oracle's).
        limit: at most this many rows.
    """
    sign = 1.0 if direction == "min" else -1.0
    ranked = sorted(rows, key=lambda r: (r["score"] is None, sign * (r["score"] or 0.0)))
    shown = [c for c in columns if c not in ("reason", "tuner_id") and
             any(r.get(c) not in (None, "") for r in rows)]

    def cell(value):
        if value is None:
            return "-"
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value)

    table = [[c if c != "score" else objective for c in shown]]
    for row in ranked[:limit]:
        table.append([cell(row.get(c)) for c in shown])
        if row["status"] != "completed":
            table[-1][-1] += f"  ({row['reason'][:60]})"
    widths = [max(len(line[i]) for line in table) for i in range(len(shown))]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip()
                     for line in table)
