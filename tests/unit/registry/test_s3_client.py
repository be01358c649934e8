"""The client side of an S3 artifact store: a tracking server whose artifact root is s3:// and that runs without
--serve-artifacts hands each run an s3:// artifact URI, and the MLflow client uploads the model itself, with boto3.

The upload is real boto3 (request building, signing, s3transfer's multipart path) against moto's in-process S3:
no network, no server process. A test-only dependency (the `test` extra); the package needs boto3 alone."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
BUCKET = "lmpipe-artifacts"


def test_boto3_is_a_runtime_dependency_not_a_test_one():
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "boto3" in {Requirement(d).name for d in dependencies}
    import boto3  # noqa: F401  - and installed here, at the version constraints.txt pins


@pytest.fixture
def s3(monkeypatch):
    """moto's S3 in this process, one bucket; the AWS and MLflow settings a real environment might carry are
    replaced, so the test never reaches a real endpoint or credential."""
    from mlflow.store.artifact import s3_artifact_repo
    from moto import mock_aws

    for name in list(os.environ):
        if name.startswith("AWS_") or name.startswith("MLFLOW_S3_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    s3_artifact_repo._cached_get_s3_client.cache_clear()  # MLflow caches clients with the credentials they saw
    with mock_aws():
        import boto3

        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        yield client
    s3_artifact_repo._cached_get_s3_client.cache_clear()


def test_an_s3_artifact_uri_gets_mlflows_boto3_repository(s3):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository
    from mlflow.store.artifact.s3_artifact_repo import S3ArtifactRepository

    repo = get_artifact_repository(f"s3://{BUCKET}/1/abc/artifacts")  # how the client resolves a run's URI
    assert isinstance(repo, S3ArtifactRepository)
    assert repo._get_s3_client().meta.service_model.service_name == "s3"  # boto3 builds it; nothing sent yet


def test_a_model_directory_uploads_to_s3_and_reads_back(s3, tmp_path):
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"model_type": "gpt2"}')
    weights = os.urandom(9 * 1024**2)  # over s3transfer's 8 MiB threshold: the multipart upload path
    (model / "model.safetensors").write_bytes(weights)

    repo = get_artifact_repository(f"s3://{BUCKET}/1/abc/artifacts")
    repo.log_artifacts(str(model), "model")

    keys = {item["Key"]: item["Size"] for item in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert keys == {
        "1/abc/artifacts/model/config.json": len('{"model_type": "gpt2"}'),
        "1/abc/artifacts/model/model.safetensors": len(weights),
    }
    etag = s3.head_object(Bucket=BUCKET, Key="1/abc/artifacts/model/model.safetensors")["ETag"]
    assert etag.endswith('-2"')  # S3 marks a multipart object's ETag with its part count
    assert sorted(f.path for f in repo.list_artifacts("model")) == ["model/config.json", "model/model.safetensors"]
    (tmp_path / "back").mkdir()
    back = Path(repo.download_artifacts("model", str(tmp_path / "back")))
    assert (back / "model.safetensors").read_bytes() == weights
