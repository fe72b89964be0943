"""The benchmark suite (``benchmarks/bench.py``, a development tool outside the package) and the
thin ``keras-resnet bench`` entry that runs it; ``--quick`` runs every benchmark end to end."""

import json
import os
import subprocess
import sys

import pytest

from keras_resnet.cli import bench as cli_bench
from keras_resnet.cli import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench  # noqa: E402
import benchlib  # noqa: E402
import torch_peer  # noqa: E402
from benchlib import Row, format_table  # noqa: E402


@pytest.mark.slow
def test_quick_bench_runs_every_benchmark(tmp_path):
    path = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "keras_resnet", "bench", "--quick", "--json", str(path)],
        capture_output=True, text=True, timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(path.read_text())
    assert payload["quick"] is True
    benchmarks = {row["benchmark"] for row in payload["rows"]}
    assert {"roofline", "resnet50", "precision", "cifar56", "serving", "accuracy",
            "resnet20", "bf16", "torchvision"} <= benchmarks
    for row in payload["rows"]:
        if row["note"].startswith("unavailable: "):
            continue
        assert row["ours"] > 0 and row["reference"] > 0, row
        assert row["ratio"] > 0, row
    assert "| benchmark | metric | ours | reference | unit | ratio |" in result.stdout


_ROW_FIELDS = {"benchmark", "metric", "ours", "reference", "unit", "higher_is_better",
               "reference_name", "note", "ratio"}


@pytest.mark.slow
def test_quick_bf16_training_and_torchvision_rows(tmp_path):
    path = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "-m", "keras_resnet", "bench", "bf16", "torchvision", "--quick",
         "--json", str(path)], capture_output=True, text=True, timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    rows = json.loads(path.read_text())["rows"]
    assert all(set(row) == _ROW_FIELDS for row in rows)
    train, infer, fold, *peer = rows
    assert [(r["benchmark"], r["metric"], r["unit"], r["reference_name"], r["note"])
            for r in (train, infer, fold)] == [
        ("bf16", "ResNet-50 training batch 4", "img/s", "float32", "ours = mixed_bfloat16"),
        ("bf16", "ResNet-50 inference batch 4", "img/s", "float32",
         "ours = mixed_bfloat16; both BN folded"),
        ("bf16", "ResNet-50 inference batch 4, bfloat16", "img/s", "BN not folded",
         "ours = BN folded")]
    assert all(r["ours"] > 0 and r["reference"] > 0 and r["ratio"] > 0
               for r in (train, infer, fold))
    reason = torch_peer.unavailable()
    if reason:
        assert [(r["benchmark"], r["metric"], r["note"]) for r in peer] == [
            ("torchvision", "ResNet-50", reason)]
    else:
        assert [(r["metric"], r["reference_name"], r["note"]) for r in peer] == [
            (f"ResNet-50 {mode} batch 4 {precision}", f"torchvision {layout}",
             "ours BN folded" if mode == "inference" else "")
            for mode in ("inference", "training") for precision in ("float32", "bfloat16")
            for layout in ("NCHW", "channels_last")]
        assert all(r["ours"] > 0 and r["reference"] > 0 for r in peer)


def test_torchvision_peer_says_why_it_is_unavailable():
    reason = torch_peer.unavailable()
    if reason is None:
        pytest.skip("torch and torchvision import here: the peer runs (the slow test times it)")
    assert reason.startswith("unavailable: No module named 'torch")
    assert reason.endswith(" (the torchvision peer needs torch and torchvision)")
    rows = bench.bench_torchvision(benchlib.Config.make(True), {})
    assert [(r.benchmark, r.metric, r.ours, r.reference, r.note) for r in rows] == [
        ("torchvision", "ResNet-50", 0.0, 0.0, reason)]
    assert format_table(rows).splitlines()[-1] == (
        f"| torchvision | ResNet-50 [{reason}] | 0 | 0 (torchvision) | img/s | - |")


def test_ratio_direction_and_table():
    faster = Row("x", "throughput", 20.0, 10.0, "img/s")
    quicker = Row("x", "time", 1.0, 4.0, "s", higher_is_better=False, reference_name="ref")
    assert faster.ratio == 2.0 and quicker.ratio == 4.0
    table = format_table([faster, quicker])
    assert table.splitlines()[-1] == "| x | time | 1 | 4 (ref) | s | 4.00x |"


def test_unknown_benchmark_is_rejected_before_running():
    with pytest.raises(ValueError, match="unknown benchmark 'gpu'; valid names: roofline"):
        bench.run(["gpu"])


def test_cli_entry_runs_the_checkout_script(capfd):
    assert main(["bench", "gpu"]) == 2
    assert "bench.py: error: unknown benchmark 'gpu'; valid names: roofline" in capfd.readouterr().err


def test_cli_entry_without_a_source_checkout_is_a_clear_error(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(cli_bench, "SCRIPT", str(tmp_path / "benchmarks" / "bench.py"))
    assert main(["bench", "--quick"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("keras-resnet bench: error: the benchmarks are not installed with the "
                          "package; they live in a source checkout as benchmarks/bench.py")
    assert len(err.strip().splitlines()) == 1


def test_benchmarks_are_not_in_the_installed_package():
    import keras_resnet

    package = os.path.dirname(keras_resnet.__file__)
    assert not os.path.exists(os.path.join(package, "bench.py"))
    assert not os.path.exists(os.path.join(package, "profiling.py"))
    assert bench.BENCHMARKS == tuple(bench.RUNNERS)


class _Clock:
    """A fake clock: each call of a timed function moves it on by that function's cost."""

    def __init__(self):
        self.now = 0.0
        self.log = []

    def __call__(self):
        return self.now

    def function(self, name, seconds):
        def fn():
            self.log.append(name)
            self.now += seconds
        return fn


def test_autorange_calibrates_the_samples():
    clock = _Clock()
    # Costs that are exact in binary floating point: 1/32 s and 1/512 s per call.
    slow, fast = clock.function("slow", 1 / 32), clock.function("fast", 1 / 512)
    # autorange times 1, 2, 5, 10, ... calls until they take 0.2 s: 10 slow calls, 200 fast.
    assert benchlib.calls_per_sample(slow, 1 / 32, timer=clock) == 1
    assert benchlib.calls_per_sample(fast, 1 / 32, timer=clock) == 16
    assert clock.log.count("slow") == 1 + 2 + 5 + 10
    assert clock.log.count("fast") == 1 + 2 + 5 + 10 + 20 + 50 + 100 + 200
    assert benchlib.calls_per_sample(fast, 10.0, timer=clock) == 50  # capped


def test_interleaving_alternates_the_order_and_reports_time_per_call():
    clock = _Clock()
    functions = {"slow": clock.function("slow", 1 / 32), "fast": clock.function("fast", 1 / 512)}
    config = benchlib.Config(repeats=4, warmup=1, min_sample=1 / 32)
    medians = benchlib.interleaved(functions, config, timer=clock)
    assert medians == {"slow": 1 / 32, "fast": 1 / 512}  # per call, not per sample
    calibration = 1 + (1 + 2 + 5 + 10) + 1 + (1 + 2 + 5 + 10 + 20 + 50 + 100 + 200)
    measured = clock.log[calibration:]
    assert measured.count("slow") == 4 and measured.count("fast") == 4 * 16
    runs = [name for i, name in enumerate(measured) if i == 0 or measured[i - 1] != name]
    # slow | fast x16 || fast x16 | slow || slow | ...: the order reverses every round, so the
    # runs merge; without the reversal there would be 8 alternating runs.
    assert runs == ["slow", "fast", "slow", "fast", "slow"]


@pytest.mark.slow
def test_frozen_weights_script_alternates_processes(tmp_path):
    path = tmp_path / "frozen.json"
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "frozen_weights.py"), "--quick",
         "--json", str(path)], capture_output=True, text=True, timeout=900,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 0, result.stderr[-3000:]
    payload = json.loads(path.read_text())
    assert [row["metric"] for row in payload["rows"]] == [
        f"ResNet-50 {precision} inference batch {batch}, 64x64"
        for precision in ("float32", "mixed_bfloat16") for batch in (1, 32)]
    assert all(row["ours"] > 0 and row["reference"] > 0 and row["ratio"] > 0
               and row["reference_name"] == "weights reordered per call"
               for row in payload["rows"])
    assert "cores" in payload["machine"] and "TensorFlow" in payload["machine"]
