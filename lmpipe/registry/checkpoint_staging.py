"""MLflow stages a checkpoint directory by hard-linking its files instead of copying them, kept apart so it is
easy to delete.

`mlflow.transformers.log_model(transformers_model=<dir>)` copies the directory into a temporary
directory (`model_io.save_local_checkpoint`, a `shutil.copytree`), then copies that into the artifact
store: every weight is written twice, where a user logging a model in memory serializes it once and
copies it once. The first copy is only staging, which MLflow deletes and never writes to, so a hard
link holds the same bytes: free where a GPT-2-sized checkpoint (350 MB) costs ~0.15 s to copy. The
artifact store still gets its own copy (`shutil.copy2` from the link), so nothing in the registry
shares a file with the artifact root. Across filesystems, or on one without hard links, each file is
copied, as before.

Only `mlflow.transformers.model_io`'s `shutil` is replaced, and only while a register is inside:
copies anywhere else in the process are untouched. tests/unit/registry/test_checkpoint_staging.py fails
if MLflow stops staging a checkpoint this way.
"""

from __future__ import annotations

import os
import shutil
from contextlib import AbstractContextManager
from typing import Any

from lmpipe.registry.shared_patch import SharedPatch


def link_or_copy(source: str, target: str) -> str:
    """A hard link to `source` (through a symlink, to the file it names), else a copy of it."""
    try:
        os.link(os.path.realpath(source), target)  # Linux's link() would link the symlink itself
    except OSError:  # another filesystem, or one without hard links
        return shutil.copy2(source, target)
    return target


class _LinkingShutil:
    """shutil as model_io sees it while installed: copytree links files where it can."""

    def __getattr__(self, name: str) -> Any:
        return getattr(shutil, name)

    @staticmethod
    def copytree(source: Any, target: Any, **options: Any) -> Any:
        return shutil.copytree(source, target, **{"copy_function": link_or_copy, **options})


_MODEL_IO_SHUTIL = SharedPatch("mlflow.transformers.model_io", "shutil", lambda _shutil: _LinkingShutil())


def checkpoint_staged_by_links() -> AbstractContextManager[None]:
    """While inside, log_model of a checkpoint directory links its files into MLflow's staging directory."""
    return _MODEL_IO_SHUTIL.applied()
