"""prefect.yaml and the templates in deployments/ agree with the config tree and with each other, checked without
a server: `prefect deploy` skips every deployment of a file its model rejects, and a bad parameter or job variable
otherwise surfaces only when a run starts on a cluster."""

from __future__ import annotations

import io
import re
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml

from lmpipe.config.schema import PipelineConfig
from lmpipe.orchestration.work_pools import load_pool_spec

ROOT = Path(__file__).resolve().parents[3]
DEPLOYMENTS = yaml.safe_load((ROOT / "prefect.yaml").read_text())["deployments"]
POOLS = {spec["name"]: spec for spec in map(load_pool_spec, sorted((ROOT / "deployments").glob("*.yaml")))}
RAY_CLUSTER_FILE = ROOT / "deployments" / "kuberay" / "raycluster.yaml"
KUBERNETES_POOLS = [spec for spec in POOLS.values() if spec["type"] == "kubernetes"]
TEMPLATED_POOLS = [spec for spec in POOLS.values() if spec.get("base_job_template")]
# The Secrets a Kubernetes job reads its credentials from: the tracking server's, then the S3 artifact store's.
CREDENTIAL_SECRETS = ("lmpipe-mlflow", "lmpipe-s3")
# Names that hold a credential (or pick one: AWS_PROFILE): they belong in a Secret, never in a job variable,
# which the Prefect server stores and shows in clear text. TOKEN only as a word: TOKENIZERS_PARALLELISM is fine.
LOOKS_LIKE_A_CREDENTIAL = re.compile(
    r"PASSWORD|SECRET|USERNAME|CREDENTIAL|ACCESS_KEY|API_KEY|(^|_)TOKEN($|_)|^AWS_", re.I
)


def test_prefects_own_model_of_prefect_yaml_keeps_every_deployment():
    # Private, but it is exactly what `prefect deploy` runs; on a validation error it prints and returns none.
    from prefect.cli.deploy._config import _load_deploy_configs_and_actions
    from rich.console import Console

    printed = io.StringIO()
    configs, _ = _load_deploy_configs_and_actions(ROOT / "prefect.yaml", console=Console(file=printed))
    assert [c["name"] for c in configs] == [d["name"] for d in DEPLOYMENTS], printed.getvalue()


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_every_deployment_has_valid_parameters_and_job_variables(deployment):
    PipelineConfig.model_validate(deployment.get("parameters", {}).get("config", {}))  # raises naming the field
    pool = POOLS[deployment["work_pool"]["name"]]
    job_variables = deployment["work_pool"].get("job_variables", {})
    if not job_variables:
        return
    schema = pool["base_job_template"]["variables"]
    assert set(job_variables) <= set(schema["properties"]), "job variables the pool does not define"
    jsonschema.validate(job_variables, schema)


def test_the_ray_deployment_matches_the_ray_cluster_and_the_gpu_pool():
    (cluster,) = yaml.safe_load_all(RAY_CLUSTER_FILE.read_text())
    (deployment,) = [d for d in DEPLOYMENTS if d["name"] == "both-ray"]
    config = PipelineConfig.model_validate(deployment["parameters"]["config"])
    train, spec = config.train, cluster["spec"]
    assert train.ray_address == f"ray://{cluster['metadata']['name']}-head-svc:10001"  # KubeRay's service name

    # Every rank gets its GPU and CPUs: ranks = worker pods x GPUs per pod.
    (workers,) = spec["workerGroupSpecs"]
    limits = workers["template"]["spec"]["containers"][0]["resources"]["limits"]
    ranks_per_pod = int(limits["nvidia.com/gpu"]) / train.ray_gpus_per_worker
    assert train.ray_workers == workers["replicas"] * ranks_per_pod
    assert train.ray_cpus_per_worker * ranks_per_pod < int(limits["cpu"])  # room for Ray's own processes

    # The same image, the same Ray as constraints.txt, and the pool's artifact claim at artifacts.root on every pod.
    variables = POOLS[deployment["work_pool"]["name"]]["base_job_template"]["variables"]["properties"]
    claim, mount_path = variables["artifacts_claim"]["default"], variables["artifacts_mount_path"]["default"]
    assert config.artifacts.root == mount_path
    ray_pin = re.search(r"^ray==(\S+)$", (ROOT / "constraints.txt").read_text(), re.M).group(1)
    assert spec["rayVersion"] == ray_pin
    for group in (spec["headGroupSpec"], workers):
        pod = group["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == variables["image"]["default"]
        (volume,) = [v["name"] for v in pod["volumes"] if v.get("persistentVolumeClaim", {}).get("claimName") == claim]
        assert {"name": volume, "mountPath": mount_path} in container["volumeMounts"]
        inline = [e["name"] for e in container.get("env", [])]
        assert not [name for name in inline if re.search(r"PASSWORD|SECRET|USERNAME|_TOKEN$", name)]  # from a Secret
        assert container["envFrom"][0]["secretRef"]["name"]


# ---------------------------------------------------------------------------- credentials


@pytest.mark.parametrize("pool", KUBERNETES_POOLS, ids=lambda p: p["name"])
def test_kubernetes_jobs_read_credentials_from_both_optional_secrets(pool):
    (container,) = pool["base_job_template"]["job_configuration"]["job_manifest"]["spec"]["template"]["spec"][
        "containers"
    ]
    refs = [source["secretRef"] for source in container["envFrom"]]
    assert tuple(ref["name"] for ref in refs) == CREDENTIAL_SECRETS
    assert all(ref["optional"] is True for ref in refs)  # an open tracking server or a proxied store needs neither
    (path,) = [p for p in (ROOT / "deployments").glob("*.yaml") if load_pool_spec(p)["name"] == pool["name"]]
    header = path.read_text()
    for name in CREDENTIAL_SECRETS:  # the header tells how to create each
        assert f"kubectl create secret generic {name}" in header
    assert "ReadWriteMany" in header  # and what the artifact claim must be


@pytest.mark.parametrize("pool", TEMPLATED_POOLS, ids=lambda p: p["name"])
def test_no_pool_variable_or_env_default_carries_a_credential(pool):
    variables = pool["base_job_template"]["variables"]["properties"]
    assert not [name for name in variables if LOOKS_LIKE_A_CREDENTIAL.search(name)]
    env_default = variables.get("env", {}).get("default", {})
    assert not [name for name in env_default if LOOKS_LIKE_A_CREDENTIAL.search(name)]
    assert not [value for value in env_default.values() if urlsplit(str(value)).username]  # https://user:pass@host


@pytest.mark.parametrize("deployment", DEPLOYMENTS, ids=lambda d: d["name"])
def test_no_deployment_passes_a_credential_as_a_job_variable(deployment):
    job_variables = deployment["work_pool"].get("job_variables", {})
    env = job_variables.get("env", {})
    assert not [name for name in [*job_variables, *env] if LOOKS_LIKE_A_CREDENTIAL.search(name)]
    assert not [value for value in env.values() if urlsplit(str(value)).username]  # https://user:pass@host
