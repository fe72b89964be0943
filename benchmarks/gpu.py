"""ResNet training and inference throughput on one device: Keras on JAX against torchvision.

A development tool, not part of the installed package: run it from a source checkout. It needs
neither TensorFlow nor the data pipeline: only jax + keras (the Keras rows) and torch +
torchvision (the PyTorch rows); the rows of a missing framework are reported "unavailable".

    python benchmarks/gpu.py --json gpu.json                      # the full matrix
    python benchmarks/gpu.py --only keras-jax,torch-compile --dtypes bfloat16 --modes train

Synthetic data (random images already on the device, random labels), so the numbers are the
model's speed, not the input pipeline's. For each mode (``train``: one SGD-momentum step with
BN in training mode; ``infer``: a forward pass in inference mode) and dtype (``float32``;
``bfloat16`` = Keras ``mixed_bfloat16`` / torch ``autocast``) it measures, on the same device:

- ``keras-jax``: ``keras_resnet.modeling.models.ResNet50`` as one stateless ``jax.jit`` step
  (``model.stateless_call`` + ``optimizer.stateless_apply``; see ``gpu_runners.py``),
- ``keras-fit``: the same model through Keras' ``train_on_batch`` / ``predict_on_batch``
  (``jit_compile=True``), on request,
- ``torch-eager`` and ``torch-compile``: torchvision's ``resnet50``, channels-last, cuDNN
  autotuning on, eager and ``torch.compile``.

float32 allows TF32 tensor cores on both sides by default (``--tf32 off``: true float32 on
both). Each config runs in its own process (``gpu_runners.py``), first step (compile) and
warm-up timed apart; images/s is the median over ``--repeats`` of ``--steps`` steps. The JSON
file is rewritten (atomically) after every config, so a killed run keeps what it measured.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CONFIGS = ("keras-jax", "keras-fit", "torch-eager", "torch-compile")
DEFAULT_CONFIGS = ("keras-jax", "torch-eager", "torch-compile")
DTYPES = ("float32", "bfloat16")
MODES = ("train", "infer")
MODELS = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet152")
DEFAULT_BATCH = {"train": 128, "infer": 256}
PACKAGES = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "keras", "torch",
            "torchvision", "numpy")
FAMILIES = (("keras-jax", "keras-fit"), ("torch-eager", "torch-compile"))


# ----------------------------------------------------------------------------- arguments


def _choices(accepted):
    def parse(text):
        values = tuple(v.strip() for v in text.split(",") if v.strip())
        bad = [v for v in values if v not in accepted]
        if not values or bad or len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(
                f"must be a comma list of distinct values from {', '.join(accepted)}; "
                f"got {text!r}")
        return values
    return parse


def _positive(kind):
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not value > 0 or not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be a positive {kind.__name__}; got {text!r}")
        return value
    return parse


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=MODELS, default="resnet50")
    parser.add_argument("--image-size", type=_positive(int), default=224)
    parser.add_argument("--batch-size", type=_positive(int),
                        help="batch size of both modes (default: train 128, infer 256)")
    parser.add_argument("--train-batch-size", type=_positive(int))
    parser.add_argument("--infer-batch-size", type=_positive(int))
    parser.add_argument("--steps", type=_positive(int), default=20, help="steps per repeat")
    parser.add_argument("--repeats", type=_positive(int), default=5,
                        help="timed repeats; images/s is their median")
    parser.add_argument("--warmup", type=int, default=3,
                        help="untimed steps after the first (compiling) step")
    parser.add_argument("--only", type=_choices(CONFIGS), default=DEFAULT_CONFIGS,
                        help=f"configs, a comma list of {','.join(CONFIGS)} "
                             f"(default {','.join(DEFAULT_CONFIGS)})")
    parser.add_argument("--dtypes", type=_choices(DTYPES), default=DTYPES)
    parser.add_argument("--modes", type=_choices(MODES), default=MODES)
    parser.add_argument("--device", choices=("auto", "cpu"), default="auto",
                        help="auto: the GPU when each framework sees one")
    parser.add_argument("--tf32", choices=("on", "off"), default="on",
                        help="float32 convolutions/matmuls may use TF32 on both sides")
    parser.add_argument("--budget-seconds", type=_positive(float),
                        help="start no new config after this many seconds")
    parser.add_argument("--json", metavar="PATH", help="results, rewritten after every config")
    args = parser.parse_args(argv)
    if args.warmup < 0:
        parser.error(f"argument --warmup: must be a non-negative int; got {args.warmup}")
    return args


# ----------------------------------------------------------------------------- environment


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as file:
            for line in file:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_smi():
    """GPU name, memory, driver and CUDA version from ``nvidia-smi`` (None without a GPU)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        query = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        header = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError) as error:
        return f"nvidia-smi failed: {error}"
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header.stdout)
    return {"gpus": [line.strip() for line in query.stdout.splitlines() if line.strip()],
            "driver_cuda": cuda.group(1) if cuda else None}


def environment():
    """The machine and package versions (read from metadata: nothing heavy is imported)."""
    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {"python": platform.python_version(), "platform": platform.platform(),
            "cpu": _cpu_model(), "cpu_count": os.cpu_count(), "nvidia_smi": _nvidia_smi(),
            "packages": versions}


# ----------------------------------------------------------------------------- running


def write_json(path, record):
    """Writes ``record`` to ``path`` atomically (a reader never sees a half-written file).

    Not keras_resnet.files: importing the package would import Keras into this parent process.
    """
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".gpu-", suffix=".json.tmp")
    try:
        with os.fdopen(fd, "w") as file:
            json.dump(record, file, indent=1)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def run_task(task, on_row):
    """Runs one framework's configs for one (mode, dtype) in a fresh process.

    ``on_row`` gets each row as it arrives; configs without a row (the process died) get a
    "failed" row naming the exit status.
    """
    command = [sys.executable, os.path.join(HERE, "gpu_runners.py"), json.dumps(task)]
    seen = set()
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        for line in process.stdout:
            if line.startswith("RESULT "):
                row = json.loads(line[len("RESULT "):])
                seen.add(row["config"])
                on_row(row)
            else:
                sys.stderr.write(line)
    for config in task["configs"]:
        if config not in seen:
            on_row({"config": config, "status": "failed",
                    "reason": f"the benchmark process exited with status {process.returncode}"})


def tasks(args, deadline):
    """One task per (mode, dtype, framework), in the order they run."""
    precision = "tensorfloat32" if args.tf32 == "on" else "float32"
    for mode in args.modes:
        batch = (args.batch_size or getattr(args, f"{mode}_batch_size")
                 or DEFAULT_BATCH[mode])
        for dtype in args.dtypes:
            for family in FAMILIES:
                configs = [c for c in family if c in args.only]
                if configs:
                    yield {"configs": configs, "mode": mode, "dtype": dtype,
                           "model": args.model, "image_size": args.image_size,
                           "batch_size": batch, "steps": args.steps, "repeats": args.repeats,
                           "warmup": args.warmup, "device": args.device,
                           "tf32": args.tf32 == "on", "jax_precision": precision,
                           "deadline": deadline}


# ----------------------------------------------------------------------------- the tables


def ratios(rows):
    """keras-jax's images/s over each torch config's, per (mode, dtype), where both ran."""
    speed = {(r["mode"], r["dtype"], r["config"]): r["images_per_s"]
             for r in rows if r["status"] == "ok"}
    out = []
    for mode, dtype in dict.fromkeys((r["mode"], r["dtype"]) for r in rows):
        entry = {"mode": mode, "dtype": dtype}
        for keras_config in ("keras-jax", "keras-fit"):
            for torch_config in ("torch-eager", "torch-compile"):
                a, b = speed.get((mode, dtype, keras_config)), speed.get((mode, dtype, torch_config))
                if a and b:
                    entry[f"{keras_config}/{torch_config}"] = round(a / b, 3)
        out.append(entry)
    return out


def summary_table(rows, configs):
    """Markdown: images/s per config and the ratios, one line per (mode, dtype)."""
    cells = {(r["mode"], r["dtype"], r["config"]): r for r in rows}
    ratio_names = [f"{k}/{t}" for k in ("keras-jax", "keras-fit") if k in configs
                   for t in ("torch-eager", "torch-compile") if t in configs]
    head = ["mode", "dtype", "batch"] + [f"{c} img/s" for c in configs] + ratio_names
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for entry in ratios(rows):
        mode, dtype = entry["mode"], entry["dtype"]
        any_row = next(r for r in rows if r["mode"] == mode and r["dtype"] == dtype)
        line = [mode, dtype, str(any_row["batch_size"])]
        for config in configs:
            row = cells.get((mode, dtype, config))
            line.append(f"{row['images_per_s']:.1f}" if row and row["status"] == "ok"
                        else (row["status"] if row else "-"))
        line += [f"{entry[n]:.2f}" if n in entry else "-" for n in ratio_names]
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines)


def detail_table(rows):
    head = ["config", "mode", "dtype", "img/s (median)", "img/s (best)", "ms/step",
            "compile s", "device / reason"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["status"] == "ok":
            cells = [f"{r['images_per_s']:.1f}", f"{r['images_per_s_best']:.1f}",
                     f"{r['step_ms']:.2f}", f"{r['compile_s']:.1f}", r["device"]]
        else:
            cells = ["-", "-", "-", "-", f"{r['status']}: {r.get('reason', '')}"]
        lines.append("| " + " | ".join([r["config"], r["mode"], r["dtype"]] + cells) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def main(argv=None):
    args = parse_args(argv)
    start = time.time()
    deadline = start + args.budget_seconds if args.budget_seconds else float("inf")
    record = {"environment": environment(), "settings": {
        k: v for k, v in vars(args).items() if k != "json"}, "results": [], "ratios": []}
    print(json.dumps(record["environment"], indent=1), flush=True)

    def on_row(row, task):
        row = {"mode": task["mode"], "dtype": task["dtype"], "model": task["model"],
               "image_size": task["image_size"], "batch_size": task["batch_size"], **row}
        record["results"].append(row)
        record["ratios"] = ratios(record["results"])
        record["elapsed_s"] = round(time.time() - start, 1)
        shown = (f"{row['images_per_s']:.1f} img/s, compile {row['compile_s']:.1f} s, "
                 f"{row['device']}" if row["status"] == "ok"
                 else f"{row['status']}: {row.get('reason')}")
        print(f"{row['config']:>13} {row['mode']:>5} {row['dtype']:>8}  {shown}", flush=True)
        if args.json:
            write_json(args.json, record)

    for task in tasks(args, deadline):
        if time.time() > deadline:  # no process to start: every config is skipped
            for config in task["configs"]:
                on_row({"config": config, "status": "skipped",
                        "reason": "--budget-seconds exceeded"}, task)
            continue
        run_task({**task, "deadline": min(deadline, 1e18)}, lambda row: on_row(row, task))
    configs = [c for c in CONFIGS if c in args.only]
    print(f"\n{args.model}, {args.image_size}x{args.image_size}, TF32 {args.tf32}, "
          f"{time.time() - start:.0f} s in all\n")
    print(summary_table(record["results"], configs))
    print()
    print(detail_table(record["results"]))
    ok = [r for r in record["results"] if r["status"] == "ok"]
    print("\ndevices: " + "; ".join(dict.fromkeys(r["device"] for r in ok)))
    versions = {k: v for r in ok for k, v in r.get("versions", {}).items()}
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
