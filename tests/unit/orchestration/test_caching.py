"""lmpipe.orchestration.caching: Prefect's cache keyed by the artifact directory, and expired when it is gone."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from lmpipe.orchestration.caching import cache_key_of, cached_stage, forget_cached_result
from lmpipe.store.keys import artifact_dir
from lmpipe.store.publish import building


def test_cached_stage_key_follows_the_artifact_directory(tmp_path):
    def output_dir_of(upstream: str, block_size: int) -> Path:
        return artifact_dir(tmp_path, "group", {"upstream": upstream, "block_size": block_size})

    options = cached_stage(output_dir_of)
    key = options["cache_key_fn"](None, {"upstream": "abc", "block_size": 64})
    assert key == options["cache_key_fn"](None, {"upstream": "abc", "block_size": 64})
    assert key.startswith("lmpipe-group-")
    assert options["cache_key_fn"](None, {"upstream": "abc", "block_size": 128}) != key
    assert options["persist_result"] is True


def test_the_cache_key_does_not_depend_on_where_the_root_is_mounted(tmp_path):
    """The same store at two mount points (a laptop's ./artifacts, a pod's /artifacts) has one key per stage."""
    keys = []
    for mount in ("laptop/artifacts", "pod/artifacts"):
        out = artifact_dir(tmp_path / mount, "group", {"upstream": "abc"})
        keys.append(cached_stage(lambda out=out: out)["cache_key_fn"](None, {}))
        assert keys[-1] == cache_key_of(out) == f"lmpipe-group-{out.name}"
    assert keys[0] == keys[1]


@pytest.fixture
def result_store(tmp_path):
    from prefect.filesystems import LocalFileSystem
    from prefect.results import ResultStore

    return ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path / "prefect-results")))


def test_a_missing_artifact_expires_its_cache_record(tmp_path, result_store):
    class Context:  # what Prefect passes to a cache key function, reduced to what we use
        pass

    context = Context()
    context.result_store = result_store
    out = artifact_dir(tmp_path / "artifacts", "group", {"x": 1})
    options = cached_stage(lambda **_: out)
    key = cache_key_of(out)
    assert options["cache_key_fn"](context, {}) == key  # points the run's store at the artifact root
    result_store.write(obj=str(out), key=key)
    assert result_store.exists(key)
    assert (tmp_path / "artifacts" / ".prefect-results" / key).is_file(), "the record lives with the artifacts"

    with building(out, "group", {"x": 1}):
        pass
    assert options["cache_key_fn"](context, {}) == key
    assert result_store.exists(key), "a complete artifact keeps its record: the stage is Cached"

    shutil.rmtree(out)
    assert options["cache_key_fn"](context, {}) == key
    assert not result_store.exists(key), "a deleted artifact must not be a cache hit"


def test_forget_cached_result_is_a_no_op_without_a_record(result_store):
    forget_cached_result(result_store, "lmpipe-none-0")
    forget_cached_result(None, "lmpipe-none-0")
    assert not result_store.exists("lmpipe-none-0")
