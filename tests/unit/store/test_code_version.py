"""lmpipe.store.code_version: a stage's code version from its imports, on a small project written here."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmpipe.store.code_version import code_text, code_version, project_closure

FILES = {
    "lmpipe/__init__.py": '"""The package."""\n',
    "lmpipe/data/__init__.py": "",
    "lmpipe/data/blocks.py": "from lmpipe.data import columns\n\ndef cut():\n    return columns.WIDTH\n",
    "lmpipe/data/columns.py": "WIDTH = 4  # block width\n",
    "lmpipe/data/unused.py": "X = 1\n",
    "lmpipe/models/__init__.py": "",
    "lmpipe/models/late.py": "Y = 2\n",
    "lmpipe/models/typing_only.py": "Z = 3\n",
    "lmpipe/config/__init__.py": "",
    "lmpipe/config/schema.py": "Config = dict\n",
    "tasks/__init__.py": "",
    "tasks/group.py": (
        '"""group."""\n'
        "from typing import TYPE_CHECKING\n"
        "from lmpipe.config.schema import Config\n"
        "from lmpipe.data.blocks import cut\n"
        "if TYPE_CHECKING:\n"
        "    from lmpipe.models import typing_only\n\n"
        "def run():\n"
        "    from lmpipe.models.late import Y  # imported when it runs\n"
        "    return cut() + Y\n"
    ),
}


@pytest.fixture()
def project(tmp_path) -> Path:
    for name, text in FILES.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    project_closure.cache_clear()
    code_version.cache_clear()
    yield tmp_path
    project_closure.cache_clear()
    code_version.cache_clear()


def test_the_closure_follows_imports_anywhere_but_not_what_never_runs_or_never_shapes_output(project):
    assert project_closure("tasks.group", project) == (
        "lmpipe.data.blocks",  # imported at the top
        "lmpipe.data.columns",  # imported by what it imports, as `from package import module`
        "lmpipe.models.late",  # imported inside a function
        "tasks.group",
    )  # not data.unused (never imported), models.typing_only (TYPE_CHECKING), config.schema (its values are in keys)


def version_after(project: Path, name: str, text: str) -> str:
    (project / name).write_text(text)
    code_version.cache_clear()
    project_closure.cache_clear()
    return code_version("tasks.group", ("numpy",), project)


def test_the_version_changes_with_code_it_runs_and_only_with_that(project):
    before = code_version("tasks.group", ("numpy",), project)
    assert version_after(project, "lmpipe/data/columns.py", "WIDTH = 4  # another comment\n\n") == before
    assert version_after(project, "lmpipe/data/unused.py", "X = 2\n") == before
    assert version_after(project, "lmpipe/models/typing_only.py", "Z = 4\n") == before
    assert version_after(project, "lmpipe/data/columns.py", "WIDTH = 8\n") != before
    assert version_after(project, "lmpipe/data/columns.py", FILES["lmpipe/data/columns.py"]) == before
    assert version_after(project, "lmpipe/models/late.py", "Y = 3\n") != before
    assert code_version("tasks.group", ("numpy", "torch"), project) != code_version("tasks.group", ("numpy",), project)


def test_code_text_drops_comments_docstrings_and_blank_lines_only():
    source = 'def f(x):\n    """Doc, with a # in it."""\n\n    # why\n    return f"{x}#"  # note\n'
    assert code_text(source) == 'def f(x):\n    return f"{x}#"'
    assert code_text(source.replace("return", "yield")) != code_text(source)
