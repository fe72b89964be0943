"""Runs the theory examples as a user would (``python examples/X.py``) and checks their numbers."""

import json
import os
import subprocess
import sys

import pytest



def _run(root, script, *args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, os.path.join(root, "examples", script), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=root, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def _json(directory, name):
    with open(os.path.join(directory, name)) as f:
        return json.load(f)


def _png(path):
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    return os.path.getsize(path)


def test_one_by_one(tmp_path, repo_root):
    out = _run(repo_root, "one_by_one.py", "--out", str(tmp_path))
    assert "[[ 2  4  6  8]" in out and "[26 28 30 32]]" in out  # 1x1 conv with weight 2
    assert "28x28x32" in out and "6,176" in out and "4,816,896" in out
    stats = _json(tmp_path, "one_by_one.json")
    assert stats["1x1"] == {"output_shape": [28, 28, 32], "params": 192 * 32 + 32,
                            "multiply_adds": 28 * 28 * 192 * 32}
    assert stats["3x3"] == {"output_shape": [28, 28, 32], "params": 3 * 3 * 192 * 32 + 32,
                            "multiply_adds": 9 * 28 * 28 * 192 * 32}


@pytest.mark.slow
def test_vanishing_exploding(tmp_path, repo_root):
    out = _run(repo_root, "vanishing_exploding.py", "--quick", "--out", str(tmp_path))
    assert "0.5^50 = 8.88e-16" in out
    assert "1.5^50 = 637621500.214" in out
    result = _json(tmp_path, "vanishing_exploding.json")
    assert result["chain"]["0.5"] == pytest.approx(0.5 ** 50, rel=1e-12)
    assert result["chain"]["1.5"] == pytest.approx(1.5 ** 50, rel=1e-12)
    table = result["first_layer_gradient_norm"]
    assert set(table) == {"he_normal", "glorot_uniform", "orthogonal", "0.5*I", "1.5*I"}
    plain = {init: row["plain"] for init, row in table.items()}
    residual = {init: row["residual"] for init, row in table.items()}
    # The chain's factors: every one of the 50 layers scales the gradient by alpha.
    assert plain["0.5*I"] < 1e-12 and plain["1.5*I"] > 1e6
    # He init keeps a plain ReLU stack's gradient at order 1; Glorot and orthogonal (variance 1/n,
    # halved by every ReLU) let it vanish.
    assert 1e-2 < plain["he_normal"] < 1e2
    assert plain["glorot_uniform"] < 1e-5 and plain["orthogonal"] < 1e-5
    # The shortcut's identity Jacobian keeps every residual stack's gradient from vanishing.
    for init in table:
        assert residual[init] > 1.0, init
        if init != "1.5*I":
            assert residual[init] > 1e3 * plain[init], init
    # 20 lines of gradient norms against depth.
    assert _png(tmp_path / "vanishing_exploding.png") > 10_000
    assert "he_normal" in out and "residual" in out


@pytest.mark.slow
def test_identity_every_block_of_resnet1202(tmp_path, repo_root):
    out = _run(repo_root, "identity.py", "--quick", "--out", str(tmp_path))
    result = _json(tmp_path, "identity.json")
    assert result["residual_block_max_abs_error"] == 0.0
    assert result["plain_block_max_abs_error"] > 0.9  # the plain block outputs 0, not X
    assert result["depth"] == 1202
    assert result["blocks"] == result["identity_blocks"] == 600
    assert result["shortcuts"] == {"identity": 598, "zero-pad (option A)": 2}
    assert result["max_abs_error"] == 0.0
    assert result["plain_first_block_max_abs_output"] == 0.0
    assert "600 of 600 blocks start as the identity" in out


@pytest.mark.slow
def test_degradation_quick(tmp_path, repo_root):
    out = _run(repo_root, "degradation.py", "--quick", "--out", str(tmp_path))
    result = _json(tmp_path, "degradation.json")
    meta = result["meta"]
    assert meta["data"] == "digits" and meta["seed"] == 0
    for name in ("plain-20", "plain-56", "resnet-20", "resnet-56"):
        assert 0.0 <= result[name] <= 1.0
        assert len(meta["curves"][name]) == meta["recipe"]["epochs"]
        assert meta["curves"][name][-1] == result[name]
    # The paper's finding: the deeper plain net fits its training set worse ...
    assert result["plain-56"] > result["plain-20"] + 0.05
    # ... and the deeper ResNet is no worse than the shallower one.
    assert result["resnet-56"] <= result["resnet-20"] + meta["tolerance"]
    assert meta["tolerance"] == 0.01
    assert meta["plain_degrades"] and meta["resnet_no_worse"]
    assert "degradation" in out
    assert _png(tmp_path / "degradation.png") > 10_000


@pytest.mark.slow
def test_identity_rejects_a_depth_outside_the_family(repo_root):
    done = subprocess.run([sys.executable, os.path.join(repo_root, "examples", "identity.py"),
                           "--depth", "21"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 2
    assert "error: --depth must be 6n+2 (8, 14, 20, 32, 44, 56, 110, 1202, ...) for a CIFAR " \
           "ResNet with bottleneck=False; got 21" in done.stderr
