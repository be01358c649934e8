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
Comments and docstrings are not part of the hash: rewording one never rebuilds an artifact.
tests/unit/tasks/test_stage_keys.py runs each stage and fails if any project code it executed is
missing from its key.
"""

from __future__ import annotations

import ast
import io
import tokenize
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
    "lmpipe.store.usage",
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
    for node in _executed_nodes(ast.parse(source)):
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


def _executed_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node of `tree` but those under `if TYPE_CHECKING:`, which never run."""
    skipped = {
        id(child)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for branch in node.body
        for child in ast.walk(branch)
    }
    return [node for node in ast.walk(tree) if id(node) not in skipped]


def code_text(source: str) -> str:
    """The source as it runs: without comments, docstrings and blank lines. Cut from the text itself, so
    the result does not depend on the Python version (ast.dump and the token stream do)."""
    docstring_lines = {
        node.body[0].lineno
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    }
    lines = source.splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    cuts = [
        (offsets[token.start[0] - 1] + token.start[1], offsets[token.end[0] - 1] + token.end[1])
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
        or (
            token.type == tokenize.STRING
            and token.start[0] in docstring_lines
            and not token.line[: token.start[1]].strip()
        )
    ]
    kept, position = [], 0
    for begin, finish in cuts:
        kept.append(source[position:begin])
        position = finish
    kept.append(source[position:])
    return "\n".join(line.rstrip() for line in "".join(kept).splitlines() if line.strip())


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
    sources = {name: code_text(module_file(name, project_root).read_text()) for name in closure}  # type: ignore[union-attr]
    return fingerprint({"sources": sources, "libraries": {lib: library_version(lib) for lib in sorted(libraries)}})
