"""Which commit of a Hub dataset a run reads, so the download artifact's key and the download name the same one.

A branch or tag moves, and an unpinned dataset follows its default branch: keying by the name would
cache the first download forever. So a name (or no name) is resolved to the commit sha the Hub serves
now, once per run, and both the key and `load_dataset(revision=...)` use that sha. A pinned 40-hex sha
is used as given, with no network call: pin one to keep a download for good. With HF_HUB_OFFLINE=1
nothing is resolved; the local Hugging Face cache answers, and the key says so.
"""

from __future__ import annotations

import re
import time
from typing import Any

from lmpipe.config.schema import DataConfig
from lmpipe.data.hub import hub_endpoint, hub_offline_mode, require_hub
from lmpipe.errors import HubUnreachableError, PipelineInputError

COMMIT_SHA = re.compile(r"[0-9a-f]{40}")  # what the Hub returns; a short or upper-case sha is resolved like a name
RESOLVE_TIMEOUT_S = 10.0  # one small JSON answer; the reachability probe before it already took at most 3.5 s
OFFLINE_AS_CACHED = "offline: as cached"


def served_sha(repo_id: str, revision: str | None, endpoint: str) -> str:
    """The commit the Hub at `endpoint` serves now for `revision` (None: the default branch). The one network call."""
    from huggingface_hub import HfApi  # imported here: a key computed for local data never loads it

    sha = HfApi(endpoint=endpoint).dataset_info(repo_id, revision=revision, timeout=RESOLVE_TIMEOUT_S).sha
    if not sha:
        raise RuntimeError(f"the Hub at {endpoint} named no commit for dataset {repo_id!r} at revision {revision!r}")
    return sha


# Each answer is kept for ANSWER_TTL_S, in this process, per (repository, revision, endpoint): a run's key, its
# download and a retry all see one answer, and the next scheduled run (minutes or days later, usually in a new
# process) asks again. A commit is the whole repository's, so the config name is not part of it. Errors are not
# kept, so a retry asks again.
ANSWER_TTL_S = 600.0
_answers: dict[tuple[str, str | None, str], tuple[float, str]] = {}


def resolved_revision(repo_id: str, revision: str | None, endpoint: str) -> str:
    """The commit sha of `revision` of dataset `repo_id`, asked of the Hub at most once per ANSWER_TTL_S."""
    asked = (repo_id, revision, endpoint)
    if asked in _answers and time.monotonic() - _answers[asked][0] < ANSWER_TTL_S:
        return _answers[asked][1]
    sha = ask_the_hub(repo_id, revision, endpoint)
    _answers[asked] = (time.monotonic(), sha)
    return sha


def ask_the_hub(repo_id: str, revision: str | None, endpoint: str) -> str:
    """served_sha, with the Hub's failures turned into one-line errors naming the field to fix."""
    from huggingface_hub.errors import HfHubHTTPError, HTTPError, RepositoryNotFoundError, RevisionNotFoundError

    named = f"revision {revision!r}" if revision else "the default branch (data.revision unset)"
    what = f"resolving dataset {repo_id!r} (data.path) at {named} to a commit"
    alternatives = (
        "Use data.source=local with data.path pointing at json/jsonl/csv/parquet/txt files, "
        "or data.source=builtin for the offline corpus"
    )
    require_hub(what, "data.revision", alternatives)
    try:
        return served_sha(repo_id, revision, endpoint)
    except RevisionNotFoundError:
        raise PipelineInputError(
            f"data.revision: dataset {repo_id!r} has no revision {revision!r} on {endpoint}"
        ) from None
    except RepositoryNotFoundError:
        raise PipelineInputError(
            f"data.path: no dataset {repo_id!r} on {endpoint} (if it is private: `hf auth login`, or set HF_TOKEN)"
        ) from None
    except HfHubHTTPError:
        raise  # the Hub answered with an error status (a 5xx, a rate limit): may pass, so the task's retries apply
    except HTTPError as error:  # no answer after all (a timeout, a reset connection): as unreachable as no probe
        raise HubUnreachableError(
            f"data.revision: {what} got no answer from the Hugging Face Hub ({endpoint}) within "
            f"{RESOLVE_TIMEOUT_S:g} s ({type(error).__name__}). {alternatives} "
            "(or set HF_HUB_OFFLINE=1 to use a copy already in the local Hugging Face cache)."
        ) from None


def hub_revision_for_download(data: DataConfig) -> str | None:
    """The revision to pass to `load_dataset`: a commit sha, or data.revision as given in offline mode."""
    if data.revision and COMMIT_SHA.fullmatch(data.revision):
        return data.revision
    if hub_offline_mode():
        return data.revision  # the local HF cache resolves it, to whatever it downloaded last
    return resolved_revision(data.path or "", data.revision, hub_endpoint())


def hub_revision_identity(data: DataConfig) -> dict[str, Any]:
    """The revision part of a Hub dataset's cache key: the commit sha, or the name plus the offline marker."""
    revision = hub_revision_for_download(data)
    if revision and COMMIT_SHA.fullmatch(revision):
        return {"revision": revision}
    # Offline, unpinned or a name: whatever the cache holds. An online run later keys by sha, apart from this.
    return {"revision": revision, "resolved": OFFLINE_AS_CACHED}
