"""The Kubeflow TFJob manifest for multi-worker GPU training (parsed back with PyYAML)."""

import pytest
import yaml

from keras_resnet.cli import main
from keras_resnet.distribute.manifest import default_command, tfjob_manifest


def test_tfjob_has_a_chief_workers_gpus_the_shared_volume_and_the_train_command():
    job = yaml.safe_load(tfjob_manifest("resnet50", workers=3, gpus_per_worker=4,
                                        image="registry.example.com/keras-resnet:1.0",
                                        volume_claim="training-data", namespace="ml"))
    assert (job["apiVersion"], job["kind"]) == ("kubeflow.org/v1", "TFJob")
    assert job["metadata"] == {"name": "resnet50", "namespace": "ml"}
    specs = job["spec"]["tfReplicaSpecs"]
    assert sorted(specs) == ["Chief", "Worker"]
    assert (specs["Chief"]["replicas"], specs["Worker"]["replicas"]) == (1, 3)
    for spec in specs.values():
        assert spec["restartPolicy"] == "OnFailure"
        pod = spec["template"]["spec"]
        [container] = pod["containers"]
        assert container["name"] == "tensorflow"  # the name the operator looks for
        assert container["image"] == "registry.example.com/keras-resnet:1.0"
        assert container["resources"] == {"limits": {"nvidia.com/gpu": 4}}
        assert container["volumeMounts"] == [{"name": "shared", "mountPath": "/shared"}]
        assert pod["volumes"] == [{"name": "shared",
                                   "persistentVolumeClaim": {"claimName": "training-data"}}]
        command = container["command"]
        assert command[:2] == ["keras-resnet", "train"]
        assert command[command.index("--strategy") + 1] == "multi-worker"
        assert command[command.index("--out") + 1] == "/shared/runs"
        assert command[command.index("--export") + 1] == "/shared/saved_models"


def test_cpu_only_job_requests_no_gpu_and_a_custom_command_is_kept():
    command = ["keras-resnet", "train", "--strategy", "multi-worker", "--data", "/data/x"]
    job = yaml.safe_load(tfjob_manifest("cpu-job", gpus_per_worker=0, command=command,
                                        mount_path="/mnt/runs"))
    container = job["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]
    assert "resources" not in container and container["command"] == command
    assert "namespace" not in job["metadata"]
    assert default_command("/mnt/runs")[-1] == "/mnt/runs/saved_models"


@pytest.mark.parametrize("kwargs, error, message", [
    ({"name": "ResNet_50"}, ValueError, r"name must be a Kubernetes name \(lower-case letters, "
                                        r"digits and '-', at most 63\); got 'ResNet_50'"),
    ({"name": "job", "workers": 0}, ValueError, r"workers must be a positive int .*; got 0"),
    ({"name": "job", "gpus_per_worker": 1.5}, TypeError, "gpus_per_worker must be .*; got 1.5"),
    ({"name": "job", "image": "a b"}, ValueError, "image must be a container image reference"),
    ({"name": "job", "command": "keras-resnet train"}, TypeError,
     "command must be a non-empty list of strings"),
    ({"name": "job", "mount_path": "shared"}, ValueError,
     r"mount_path must be an absolute path \(e.g. '/shared'\); got 'shared'"),
    ({"name": "job", "volume_claim": 7}, TypeError, "volume_claim must be a Kubernetes name"),
])
def test_bad_manifest_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        tfjob_manifest(**kwargs)


def test_command_line_writes_the_manifest_atomically(tmp_path, capsys):
    out = tmp_path / "job.yaml"
    assert main(["manifest", "job", "--workers", "2", "--gpus-per-worker", "8", "--out", str(out),
                 "--",
                 "keras-resnet", "train", "--strategy", "multi-worker"]) == 0
    job = yaml.safe_load(out.read_text())
    worker = job["spec"]["tfReplicaSpecs"]["Worker"]
    assert worker["replicas"] == 2
    container = worker["template"]["spec"]["containers"][0]
    assert container["command"] == ["keras-resnet", "train", "--strategy", "multi-worker"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 8
    assert [p.name for p in tmp_path.iterdir()] == ["job.yaml"]  # no temporary left
    assert capsys.readouterr().out == f"wrote {out}\n"
    assert main(["manifest", "Bad"]) == 2
    assert capsys.readouterr().err == (
        "keras-resnet manifest: error: name must be a Kubernetes name (lower-case "
        "letters, digits and '-', at most 63); got 'Bad'\n")


def test_command_line_prints_the_default_manifest(capsys):
    assert main(["manifest", "job", "--gpus-per-worker", "0"]) == 0
    job = yaml.safe_load(capsys.readouterr().out)
    container = job["spec"]["tfReplicaSpecs"]["Chief"]["template"]["spec"]["containers"][0]
    assert container["command"] == default_command()
    assert "resources" not in container


def test_words_after_double_dash_belong_to_manifest_only(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["summary", "--", "resnet18"])
    assert exit_.value.code == 2
    assert "keras-resnet: error: unrecognized arguments: -- resnet18" in capsys.readouterr().err
