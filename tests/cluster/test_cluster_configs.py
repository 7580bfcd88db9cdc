"""The cluster configs cannot rot silently: the launcher YAML against the schema Ray ships, the KubeRay
manifests' required fields, every RayJob entry point a `jobs/` script whose arguments our CLI accepts,
and every entry point's --help."""

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from axion_ray.cli import build_parser

REPO = Path(__file__).resolve().parents[2]
CLUSTER = REPO / "cluster"
MANIFESTS = sorted((CLUSTER / "kuberay").glob("*.yaml"))
JOBS = sorted((REPO / "jobs").glob("*.py"))


def test_launcher_config_matches_rays_own_schema():
    import jsonschema
    import ray

    schema = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())
    cfg = yaml.safe_load((CLUSTER / "aws.yaml").read_text())
    jsonschema.validate(cfg, schema)
    gpu_types = [t for t in cfg["available_node_types"].values() if t.get("max_workers", 0) > 0]
    assert gpu_types and all(t["min_workers"] == 0 for t in gpu_types)         # autoscaling from zero
    assert cfg["idle_timeout_minutes"] > 0
    assert any("pip install -e" in c for c in cfg["setup_commands"])          # installs this project
    starts = " ".join(cfg["head_start_ray_commands"] + cfg["worker_start_ray_commands"])
    assert starts.count("RAY_AUTH_MODE=token") == 2                          # token auth on every node
    broken = {**cfg, "max_workers": "many"}
    with pytest.raises(jsonschema.ValidationError):                           # the check can fail
        jsonschema.validate(broken, schema)


def _load(path):
    return yaml.safe_load(path.read_text())


def test_kuberay_cluster_has_what_the_operator_needs():
    rc = _load(CLUSTER / "kuberay" / "raycluster.yaml")
    assert rc["apiVersion"] == "ray.io/v1" and rc["kind"] == "RayCluster" and rc["metadata"]["name"]
    spec = rc["spec"]
    assert spec["enableInTreeAutoscaling"] is True and spec["authOptions"]["mode"] == "token"
    assert tuple(int(v) for v in spec["rayVersion"].split(".")) >= (2, 52, 0)   # token auth needs 2.52+
    head = spec["headGroupSpec"]
    assert "rayStartParams" in head and head["template"]["spec"]["containers"][0]["image"]
    for group in spec["workerGroupSpecs"]:
        assert group["groupName"] and 0 <= group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
        container = group["template"]["spec"]["containers"][0]
        assert container["image"] and int(container["resources"]["limits"]["nvidia.com/gpu"]) >= 1


def _job_prefix(script: Path) -> list[str]:
    """The CLI words a jobs/ script puts before the user's arguments (`main(["train", "stage2", *sys.argv…`)."""
    match = re.search(r"main\(\[(.*?)\*sys\.argv", script.read_text())
    assert match, f"{script} does not call axion_ray.cli.main with sys.argv"
    return [w.strip().strip("\"'") for w in match.group(1).split(",") if w.strip()]


@pytest.mark.parametrize("manifest", [m for m in MANIFESTS if m.name.startswith("rayjob")], ids=lambda p: p.name)
def test_every_rayjob_runs_one_of_our_jobs_with_valid_arguments(manifest):
    job = _load(manifest)
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    rc = _load(CLUSTER / "kuberay" / "raycluster.yaml")
    assert job["spec"]["clusterSelector"]["ray.io/cluster"] == rc["metadata"]["name"]
    assert isinstance(yaml.safe_load(job["spec"]["runtimeEnvYAML"]), dict)
    words = shlex.split(job["spec"]["entrypoint"])
    assert words[0] == "python" and words[1].startswith("jobs/")
    script = REPO / words[1]
    assert script.is_file()
    args = build_parser().parse_args(_job_prefix(script) + words[2:])         # argparse exits 2 if invalid
    assert callable(args.func)


def test_shared_runtime_env_is_one_ray_accepts():
    from ray.runtime_env import RuntimeEnv

    env = _load(CLUSTER / "runtime_env.yaml")
    RuntimeEnv(**env)
    assert env["env_vars"]["HF_HUB_OFFLINE"] == "1"


@pytest.mark.parametrize("script", JOBS, ids=lambda p: p.name)
def test_every_entry_point_answers_help(script):
    result = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=REPO,
                            timeout=120)
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr[-2000:]
