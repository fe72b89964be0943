"""benchmarks/gpu.py: Keras-on-JAX and torchvision throughput, run where TensorFlow is absent.

The script runs on the CPU here, in a subprocess whose imports of ``tensorflow``, ``torch`` and
``torchvision`` fail (a ``sitecustomize`` on PYTHONPATH, inherited by the script's own worker
processes): the Keras rows must be measured without TensorFlow, the torch rows reported
"unavailable" rather than ending the run.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from keras_resnet.modeling import presets

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, "benchmarks", "gpu.py")
TINY = ["--model", "resnet18", "--image-size", "32", "--batch-size", "2", "--steps", "1",
        "--warmup", "0"]
BLOCKER = '''import sys


class _Absent:
    """Makes the import of these packages fail as if they were not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {BLOCKED}:
            raise ModuleNotFoundError(f"No module named {name!r} (blocked by the test)",
                                      name=name)
        return None


sys.meta_path.insert(0, _Absent())
'''


def _run(tmp_path, *args, blocked=("tensorflow", "torch", "torchvision")):
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(BLOCKER.replace("{BLOCKED}", repr(set(blocked))))
    env = {**os.environ, "KERAS_BACKEND": "jax", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=600)


def _load_gpu_module():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _rows(path):
    record = json.loads(path.read_text())
    return record, {(r["config"], r["mode"], r["dtype"]): r for r in record["results"]}


@pytest.mark.slow  # a process that imports JAX and Keras and compiles ResNet-18
def test_keras_inference_without_tensorflow_torch_unavailable(tmp_path):
    out = tmp_path / "gpu.json"
    result = _run(tmp_path, *TINY, "--repeats", "2", "--modes", "infer", "--dtypes", "float32",
                  "--json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    record, rows = _rows(out)
    assert len(record["results"]) == 3
    keras_row = rows["keras-jax", "infer", "float32"]
    assert keras_row["status"] == "ok", keras_row
    assert keras_row["images_per_s"] > 0 and len(keras_row["repeat_s"]) == 2
    assert keras_row["compile_s"] > 0 and keras_row["device"].startswith("cpu")
    assert keras_row["trainable_params"] == presets.TORCHVISION_PARAMS[18]
    assert (keras_row["batch_size"], keras_row["image_size"]) == (2, 32)
    for config in ("torch-eager", "torch-compile"):
        row = rows[config, "infer", "float32"]
        assert row["status"] == "unavailable"
        assert row["reason"].startswith("torch cannot be imported")
    assert record["ratios"] == [{"mode": "infer", "dtype": "float32"}]
    assert record["settings"]["only"] == ["keras-jax", "torch-eager", "torch-compile"]
    assert "| infer | float32 | 2 |" in result.stdout
    assert "| torch-eager | infer | float32 | - |" in result.stdout


@pytest.mark.slow
def test_keras_training_rows_in_bfloat16(tmp_path):
    out = tmp_path / "gpu.json"
    result = _run(tmp_path, *TINY, "--repeats", "1", "--only", "keras-jax,keras-fit",
                  "--modes", "train", "--dtypes", "bfloat16", "--json", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    _, rows = _rows(out)
    assert sorted(rows) == [("keras-fit", "train", "bfloat16"), ("keras-jax", "train", "bfloat16")]
    for key, row in rows.items():
        assert row["status"] == "ok", (key, row)
        assert row["images_per_s"] > 0 and len(row["repeat_s"]) == 1
        assert row["trainable_params"] == presets.TORCHVISION_PARAMS[18]
        assert row["batch_size"] == 2
    assert "| train | bfloat16 | 2 |" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("torch") is None
                    or importlib.util.find_spec("torchvision") is None,
                    reason="torch and torchvision are not installed (the CI installs neither)")
def test_torch_rows_when_torch_is_installed(tmp_path):
    out = tmp_path / "gpu.json"
    result = _run(tmp_path, *TINY, "--repeats", "1", "--modes", "train,infer",
                  "--dtypes", "float32", "--only", "torch-eager", "--json", str(out),
                  blocked=("tensorflow",))
    assert result.returncode == 0, result.stderr[-3000:]
    _, rows = _rows(out)
    for mode in ("train", "infer"):
        row = rows["torch-eager", mode, "float32"]
        assert row["status"] == "ok", row
        assert row["trainable_params"] == presets.TORCHVISION_PARAMS[18]


def test_budget_exceeded_skips_every_config_and_still_writes(tmp_path):
    out = tmp_path / "gpu.json"
    result = _run(tmp_path, *TINY, "--budget-seconds", "1e-9", "--json", str(out))
    assert result.returncode == 0, result.stderr
    record, rows = _rows(out)
    assert len(rows) == 12  # 3 configs x 2 modes x 2 dtypes
    assert {r["status"] for r in rows.values()} == {"skipped"}
    assert {r["reason"] for r in rows.values()} == {"--budget-seconds exceeded"}
    assert [r["config"] for r in record["results"][:3]] == [
        "keras-jax", "torch-eager", "torch-compile"]


@pytest.mark.parametrize("args, message", [
    (["--only", "keras-jax,tf"], "argument --only: must be a comma list of distinct values "
                                 "from keras-jax, keras-fit, torch-eager, torch-compile; "
                                 "got 'keras-jax,tf'"),
    (["--dtypes", "float16"], "argument --dtypes: must be a comma list of distinct values "
                              "from float32, bfloat16; got 'float16'"),
    (["--modes", "train,train"], "argument --modes: must be a comma list of distinct values "
                                 "from train, infer; got 'train,train'"),
    (["--steps", "0"], "argument --steps: must be a positive int; got '0'"),
    (["--budget-seconds", "nan"], "argument --budget-seconds: must be a positive float; "
                                  "got 'nan'"),
    (["--warmup", "-1"], "argument --warmup: must be a non-negative int; got -1"),
])
def test_bad_arguments_exit_2_before_any_work(tmp_path, args, message):
    result = _run(tmp_path, *args, "--json", str(tmp_path / "gpu.json"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].endswith(message)
    assert not (tmp_path / "gpu.json").exists()


def test_ratios_and_summary_table():
    gpu = _load_gpu_module()
    base = {"mode": "train", "dtype": "bfloat16", "batch_size": 128, "status": "ok"}
    rows = [{**base, "config": "keras-jax", "images_per_s": 3000.0},
            {**base, "config": "torch-eager", "images_per_s": 2000.0},
            {**base, "config": "torch-compile", "images_per_s": 2400.0},
            {**base, "dtype": "float32", "config": "keras-jax", "images_per_s": 1000.0},
            {**base, "dtype": "float32", "config": "torch-eager", "status": "failed"}]
    assert gpu.ratios(rows) == [
        {"mode": "train", "dtype": "bfloat16", "keras-jax/torch-eager": 1.5,
         "keras-jax/torch-compile": 1.25},
        {"mode": "train", "dtype": "float32"}]
    table = gpu.summary_table(rows, ["keras-jax", "torch-eager", "torch-compile"]).splitlines()
    assert table[0] == ("| mode | dtype | batch | keras-jax img/s | torch-eager img/s | "
                        "torch-compile img/s | keras-jax/torch-eager | keras-jax/torch-compile |")
    assert table[2] == "| train | bfloat16 | 128 | 3000.0 | 2000.0 | 2400.0 | 1.50 | 1.25 |"
    assert table[3] == "| train | float32 | 128 | 1000.0 | failed | - | - | - |"
