"""lmpipe.data.sources: the download key's source identity, the same wherever the data is mounted, and a Hub
dataset keyed by the commit it is read at (lmpipe.data.hub_revision). No test here reaches the real Hub."""

from __future__ import annotations

import http.server
import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from lmpipe.config.schema import DataConfig
from lmpipe.data import hub, hub_revision
from lmpipe.data.hub_revision import OFFLINE_AS_CACHED, hub_revision_for_download, served_sha
from lmpipe.data.sources import glob_base, source_identity
from lmpipe.errors import HubUnreachableError, PipelineInputError

ROWS = [{"text": f"row {i}"} for i in range(5)]
SHA = "a" * 40
NEXT_SHA = "b" * 40
REFUSED = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused at once


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def local(path: Path | str) -> DataConfig:
    return DataConfig(source="local", path=str(path))


def files_of(data: DataConfig, root: Path) -> dict[str, str]:
    return source_identity(data, root)["files"]


# ---------------------------------------------------------------------------- local files


@pytest.mark.parametrize(
    "pattern, base",
    [
        ("data/rows.jsonl", "data"),
        ("rows.jsonl", "."),
        ("/mnt/corpus/part-*.jsonl", "/mnt/corpus"),
        ("data/**/*.jsonl", "data"),
        ("data/shard-?/x.csv", "data"),
        ("data/[ab].txt", "data"),
        ("*.jsonl", "."),
    ],
)
def test_glob_base_is_the_literal_part_before_the_first_glob_character(pattern, base):
    assert glob_base(Path(pattern)) == Path(base)


@pytest.mark.parametrize("pattern", ["rows.jsonl", "*.jsonl", "**/*.jsonl"])
def test_the_same_files_elsewhere_have_the_same_identity(tmp_path, monkeypatch, pattern):
    laptop = tmp_path / "laptop" / "data"
    write_jsonl(laptop / "rows.jsonl", ROWS)
    write_jsonl(laptop / "more" / "extra.jsonl", ROWS[:2])
    pod = tmp_path / "mnt" / "shared" / "data"
    shutil.copytree(laptop, pod)
    monkeypatch.chdir(tmp_path / "laptop")
    here = source_identity(local(Path("data") / pattern), tmp_path / "artifacts")  # ./data on a laptop
    there = source_identity(local(pod / pattern), tmp_path / "artifacts")  # /data in a pod
    assert here == there
    assert str(tmp_path) not in json.dumps(here)


def test_a_recursive_glob_keys_files_by_their_names_under_the_base(tmp_path):
    write_jsonl(tmp_path / "data" / "a.jsonl", ROWS)
    write_jsonl(tmp_path / "data" / "sub" / "b.jsonl", ROWS[:1])
    assert sorted(files_of(local(tmp_path / "data" / "**" / "*.jsonl"), tmp_path)) == ["a.jsonl", "sub/b.jsonl"]


def test_a_plain_file_path_is_keyed_by_its_file_name(tmp_path):
    path = write_jsonl(tmp_path / "data" / "rows.jsonl", ROWS)
    assert list(files_of(local(path), tmp_path)) == ["rows.jsonl"]


def test_a_renamed_file_changes_the_identity(tmp_path):
    # Names are part of the identity: files are read in name order, so a rename can reorder the corpus.
    path = write_jsonl(tmp_path / "data" / "a.jsonl", ROWS)
    before = source_identity(local(tmp_path / "data" / "*.jsonl"), tmp_path)
    path.rename(tmp_path / "data" / "b.jsonl")
    after = source_identity(local(tmp_path / "data" / "*.jsonl"), tmp_path)
    assert after != before
    assert list(after["files"].values()) == list(before["files"].values())  # same bytes, another name


def test_a_symlinked_file_counts_by_its_own_name_and_its_target_contents(tmp_path):
    target = write_jsonl(tmp_path / "store" / "blob-123", ROWS)
    (tmp_path / "linked").mkdir()
    (tmp_path / "linked" / "rows.jsonl").symlink_to(target)
    copied = write_jsonl(tmp_path / "copied" / "rows.jsonl", ROWS)
    assert files_of(local(tmp_path / "linked" / "*.jsonl"), tmp_path) == files_of(local(copied), tmp_path)


# ---------------------------------------------------------------------------- Hub datasets: the policy
#
# These tests patch the one function that asks the Hub for a sha (hub_revision.served_sha) and the
# reachability probe: the Hub cannot be reached from the test machines. The real call is tested below
# against a loopback server speaking the Hub's API, and the real probe against a closed port.


@pytest.fixture(autouse=True)
def fresh_resolution(monkeypatch):
    """Each test starts with nothing resolved, online."""
    monkeypatch.setattr(hub_revision, "_answers", {})
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_ENDPOINT", REFUSED)
    yield


class FakeHub:
    """Stands in for served_sha: answers `shas[revision]` and records each question."""

    def __init__(self, monkeypatch, shas: dict[str | None, str]):
        self.shas, self.asked = shas, []
        monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
        monkeypatch.setattr(hub_revision, "served_sha", self.served_sha)

    def served_sha(self, repo_id: str, revision: str | None, endpoint: str) -> str:
        self.asked.append((repo_id, revision))
        return self.shas[revision]


def no_network(monkeypatch) -> None:
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("probed the Hub"))
    monkeypatch.setattr(hub_revision, "served_sha", lambda *a, **k: pytest.fail("asked the Hub for a sha"))


def hub_data(revision: str | None = None) -> DataConfig:
    return DataConfig(source="hub", path="acme/corpus", split="train[:100]", revision=revision)


def test_an_unpinned_dataset_is_keyed_by_the_commit_the_hub_serves(monkeypatch, tmp_path):
    fake = FakeHub(monkeypatch, {None: SHA})
    assert source_identity(hub_data(), tmp_path) == {
        "dataset": "acme/corpus",
        "config_name": None,
        "split": "train[:100]",
        "revision": SHA,
    }
    assert fake.asked == [("acme/corpus", None)]


def test_a_new_upstream_commit_changes_the_key_on_the_next_run(monkeypatch, tmp_path):
    fake = FakeHub(monkeypatch, {None: SHA})
    clock = [1000.0]
    monkeypatch.setattr(hub_revision.time, "monotonic", lambda: clock[0])
    first = source_identity(hub_data(), tmp_path)
    fake.shas[None] = NEXT_SHA  # the dataset's owner pushed during the week
    clock[0] += 60
    assert source_identity(hub_data(), tmp_path) == first  # the same run keeps its answer
    clock[0] += hub_revision.ANSWER_TTL_S  # the next scheduled run
    assert source_identity(hub_data(), tmp_path)["revision"] == NEXT_SHA


def test_the_download_loads_the_commit_its_key_names_and_the_hub_is_asked_once(monkeypatch, tmp_path):
    fake = FakeHub(monkeypatch, {None: SHA})
    key = source_identity(hub_data(), tmp_path)
    fake.shas[None] = NEXT_SHA  # a push between the key and the download does not split them
    assert hub_revision_for_download(hub_data()) == key["revision"] == SHA
    assert source_identity(hub_data(), tmp_path) == key
    assert len(fake.asked) == 1


def test_a_pinned_commit_sha_is_used_as_given_without_the_network(monkeypatch, tmp_path):
    no_network(monkeypatch)
    assert source_identity(hub_data(SHA), tmp_path)["revision"] == SHA
    assert hub_revision_for_download(hub_data(SHA)) == SHA


@pytest.mark.parametrize("name", ["main", "v1.0", "refs/convert/parquet", "a" * 7])
def test_a_branch_or_tag_name_is_resolved_to_its_commit(monkeypatch, tmp_path, name):
    fake = FakeHub(monkeypatch, {name: SHA})
    assert source_identity(hub_data(name), tmp_path)["revision"] == SHA
    assert hub_revision_for_download(hub_data(name)) == SHA
    assert fake.asked == [("acme/corpus", name)]


def test_offline_mode_resolves_nothing_and_the_key_says_so(monkeypatch, tmp_path):
    no_network(monkeypatch)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert source_identity(hub_data(), tmp_path)["revision"] is None
    assert source_identity(hub_data(), tmp_path)["resolved"] == OFFLINE_AS_CACHED
    assert source_identity(hub_data("main"), tmp_path) == {
        "dataset": "acme/corpus",
        "config_name": None,
        "split": "train[:100]",
        "revision": "main",
        "resolved": OFFLINE_AS_CACHED,
    }
    assert hub_revision_for_download(hub_data("main")) == "main"  # the local HF cache resolves it
    assert "resolved" not in source_identity(hub_data(SHA), tmp_path)  # a sha is exact, online or not


def test_an_unreachable_hub_fails_fast_naming_the_field(tmp_path):
    started = time.monotonic()
    with pytest.raises(HubUnreachableError) as caught:
        source_identity(hub_data(), tmp_path)  # the real probe, against a closed port
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("data.revision: resolving dataset 'acme/corpus' (data.path) at the default branch")
    assert REFUSED in message and "data.source=local" in message and "HF_HUB_OFFLINE=1" in message


# ---------------------------------------------------------------------------- Hub datasets: the real call


class HubApi(http.server.BaseHTTPRequestHandler):
    """The two answers of the Hub's dataset-info API that the resolution reads, and one that never comes."""

    def do_HEAD(self):  # the reachability probe
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        if self.path.startswith("/api/datasets/acme/slow"):
            time.sleep(3)  # past the client's timeout; then no answer at all
            return
        if self.path.startswith("/api/datasets/acme/corpus/revision/gone"):
            self.send_response(404)
            self.send_header("X-Error-Code", "RevisionNotFound")
            self.end_headers()
            return
        body = json.dumps({"id": "acme/corpus", "sha": SHA}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture()
def loopback_hub(monkeypatch):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), HubApi)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_port}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    yield endpoint
    server.shutdown()
    server.server_close()


def test_served_sha_reads_the_commit_from_the_dataset_info_api(loopback_hub, tmp_path):
    assert served_sha("acme/corpus", None, loopback_hub) == SHA
    assert source_identity(hub_data("main"), tmp_path)["revision"] == SHA


def test_a_revision_the_hub_does_not_have_is_an_input_error_naming_the_field(loopback_hub):
    with pytest.raises(PipelineInputError, match=r"^data\.revision: dataset 'acme/corpus' has no revision 'gone'"):
        hub_revision_for_download(hub_data("gone"))


def test_a_hub_that_answers_the_probe_but_not_the_question_fails_within_the_timeout(loopback_hub, monkeypatch):
    monkeypatch.setattr(hub_revision, "RESOLVE_TIMEOUT_S", 1.0)
    started = time.monotonic()
    with pytest.raises(HubUnreachableError, match=r"^data\.revision: .* got no answer .* within 1 s"):
        hub_revision_for_download(DataConfig(source="hub", path="acme/slow"))
    assert time.monotonic() - started < 4
