"""`keras-resnet bench --quick` runs every benchmark end to end, so the suite cannot rot."""

import json
import os
import subprocess
import sys
import time

import pytest

from keras_resnet import bench
from keras_resnet.bench import Row, format_table


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
            "resnet20"} <= benchmarks
    for row in payload["rows"]:
        assert row["ours"] > 0 and row["reference"] > 0, row
        assert row["ratio"] > 0, row
    assert "| benchmark | metric | ours | reference | unit | ratio |" in result.stdout


def test_ratio_direction_and_table():
    faster = Row("x", "throughput", 20.0, 10.0, "img/s")
    quicker = Row("x", "time", 1.0, 4.0, "s", higher_is_better=False, reference_name="ref")
    assert faster.ratio == 2.0 and quicker.ratio == 4.0
    table = format_table([faster, quicker])
    assert table.splitlines()[-1] == "| x | time | 1 | 4 (ref) | s | 4.00x |"


def test_unknown_benchmark_is_rejected_before_running():
    with pytest.raises(ValueError, match="unknown benchmark 'gpu'; valid names: roofline"):
        bench.run(["gpu"])


def test_interleaving_calibrates_samples_and_alternates_the_order():
    log = []

    def make(name, seconds):
        def fn():
            log.append(name)
            time.sleep(seconds)
        return fn

    config = bench.Config(repeats=4, warmup=1, min_sample=0.02)
    medians = bench._interleaved({"slow": make("slow", 0.02), "fast": make("fast", 0.002)},
                                 config)
    # Per call, not per sample: the fast side ran ~10 calls per sample.
    assert 0.015 < medians["slow"] < 0.05 and 0.0015 < medians["fast"] < 0.008
    measured = log[4:]  # after warm-up and calibration (two calls each)
    runs = [name for i, name in enumerate(measured) if i == 0 or measured[i - 1] != name]
    # slow | fast x10 || fast x10 | slow || slow | ...: the order reverses every round, so
    # the runs merge; without the reversal there would be 8 alternating runs.
    assert runs == ["slow", "fast", "slow", "fast", "slow"]
    assert 6 <= measured.count("fast") / 4 <= 14
