"""The sha256 of an input file, remembered for as long as the file's stat says it is unchanged.

A local corpus enters the download artifact's key by content, so renaming a file or touching it
does not lose the cache, and editing it does. Hashing 100 GB on every cache lookup is not an
option: the digest is kept beside the artifacts, keyed by path, and trusted while the file's
size, modification time and inode are the ones it was computed for (what `git status` and
`make` trust). A file written while it was hashed, or modified less than RACY_S ago (an edit
within the same clock tick would keep its time), is not remembered: git's racy-clean rule. An edit
that keeps all three is not seen here: the cached corpus artifact is reused until the file changes
its stat or `lmpipe verify` / a rebuild reads it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from lmpipe.store.atomic_file import write_atomically
from lmpipe.store.keys import file_digest, fingerprint

MEMO_DIR = ".digests"  # under the artifact root, beside the stage directories
RACY_S = 2.0


def remembered_digest(path: Path, root: str | Path) -> str:
    """sha256 of `path`, computed once per version of the file (as its stat tells versions apart)."""
    path = Path(path).resolve()
    stat = path.stat()
    version = {"bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino, "device": stat.st_dev}
    memo = Path(root).expanduser().resolve() / MEMO_DIR / f"{fingerprint(str(path))}.json"
    try:
        remembered = json.loads(memo.read_text())
        if remembered["path"] == str(path) and remembered["version"] == version:
            return str(remembered["sha256"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # none yet, or unreadable: compute it again
    digest = file_digest(path)
    after = path.stat()
    changed = (after.st_size, after.st_mtime_ns) != (stat.st_size, stat.st_mtime_ns)
    if changed or time.time() - after.st_mtime < RACY_S:
        return digest  # true of the bytes just read, but not to be trusted for the next lookup
    # Atomic: a concurrent reader sees the old memo or the new one.
    write_atomically(memo, json.dumps({"path": str(path), "version": version, "sha256": digest}).encode())
    return digest
