"""A stage's code version, derived from what its module imports rather than listed by hand.

An artifact's key must change whenever code that shapes the artifact changes. Hand-kept lists of
files drift (the training key once left out the device planning that picks its precision), so
the list is computed: the stage's task module and every project module it imports, directly or
through others, read from their source (every `import`, including those inside functions). Each
stage also names the libraries that shape its output, and only those: download does not depend
on torch, so a CPU and a GPU worker share its artifact.

Not followed, because they never change what an artifact holds:
- the config schema and its loading: the values they produce are part of every key already;
- the store's bookkeeping (keys, manifests, locks, publishing): they decide where an artifact lives
  and whether it is whole, not what it holds, and every lookup checks an artifact against them, so a
  change there rebuilds exactly what it invalidates (Arrow streaming, which writes the data, is followed);
- lmpipe.orchestration: the Prefect glue decides when and where a stage runs, not what it writes;
- lmpipe.errors: a stage that raises publishes nothing;
- this module: it computes keys and writes nothing;
- lmpipe.cli: nothing a stage runs imports it.
tests/unit/test_stage_keys.py runs each stage and fails if any project code it executed is
missing from its key.
"""

from __future__ import annotations

import ast
from functools import cache
from importlib import metadata
from pathlib import Path

from lmpipe.store.keys import fingerprint

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("lmpipe", "tasks", "flows")
NOT_FOLLOWED = (
    "lmpipe.config.schema",
    "lmpipe.config.loading",
    "lmpipe.config.paths",
    "lmpipe.config.reference",
    "lmpipe.store.keys",
    "lmpipe.store.manifest",
    "lmpipe.store.locks",
    "lmpipe.store.publish",
    "lmpipe.store.code_version",
    "lmpipe.orchestration",
    "lmpipe.errors",
    "lmpipe.cli",
)


def is_followed(module: str) -> bool:
    """A module of this project whose code can shape an artifact."""
    in_project = module.split(".")[0] in PROJECT_PACKAGES
    excluded = any(module == name or module.startswith(name + ".") for name in NOT_FOLLOWED)
    return in_project and not excluded


def module_file(module: str, project_root: Path = PROJECT_ROOT) -> Path | None:
    """The source file of a project module or package, or None if there is none (an attribute, say)."""
    base = project_root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(source: str, module: str, project_root: Path = PROJECT_ROOT) -> set[str]:
    """Every project module `source` (the code of `module`) imports, anywhere in it.

    `from a.b import c` counts as a.b and, when c is a module of its own, a.b.c.
    """
    path = module_file(module, project_root)
    package = module if path is not None and path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            for alias in node.names:  # a submodule, or a name defined in the module `base`
                submodule = f"{base}.{alias.name}"
                found.add(submodule if module_file(submodule, project_root) is not None else base)
    return {name for name in found if name and module_file(name, project_root) is not None}


@cache
def project_closure(root: str, project_root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """`root` and every project module it reaches through imports, sorted; see the module docstring."""
    seen: set[str] = set()
    pending = [root]
    while pending:
        name = pending.pop()
        if name in seen or not is_followed(name):
            continue
        path = module_file(name, project_root)
        if path is None:
            continue
        seen.add(name)
        pending.extend(imported_modules(path.read_text(), name, project_root) - seen)
    return tuple(sorted(seen))


def library_version(library: str) -> str:
    try:
        return metadata.version(library)
    except metadata.PackageNotFoundError:
        return "absent"


@cache
def code_version(root: str, libraries: tuple[str, ...], project_root: Path = PROJECT_ROOT) -> str:
    """Hash of the source of `root`'s project closure and the versions of `libraries`.

    Cached per process: the sources a running process executes do not change under it.
    """
    closure = project_closure(root, project_root)
    sources = {name: module_file(name, project_root).read_text() for name in closure}  # type: ignore[union-attr]
    return fingerprint({"sources": sources, "libraries": {lib: library_version(lib) for lib in sorted(libraries)}})
