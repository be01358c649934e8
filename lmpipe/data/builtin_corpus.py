"""The offline default corpus: real English text from the Python standard library's docstrings.

Every machine that runs this project has the standard library's sources, so the corpus is
generated at run time and nothing is copied into the repository. Documents are shaped like
ELI5 (q_id, title, selftext, answers{a_id, text, score}) so that flatten does real work:

    title    -> "What is json.JSONEncoder for?"
    selftext -> the class (or module) docstring
    answers  -> the docstrings of its methods (or functions), one answer each
"""

from __future__ import annotations

import ast
import hashlib
import random
import sysconfig
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Test suites and GUI demos hold little prose; vendored packages are not the stdlib's own text.
_SKIPPED_PARTS = {
    "test",
    "tests",
    "idle_test",
    "site-packages",
    "dist-packages",
    "__pycache__",
    "lib2to3",
    "turtledemo",
}
_MIN_ANSWER_CHARS = 40


def stdlib_root() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_sources(root: Path | None = None) -> list[Path]:
    root = root or stdlib_root()
    return sorted(path for path in root.rglob("*.py") if not _SKIPPED_PARTS.intersection(path.relative_to(root).parts))


def _short_id(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _clean(docstring: str | None) -> str:
    return (docstring or "").strip()


def _document(name: str, question: str, context: str, answers: list[str]) -> dict[str, Any]:
    return {
        "q_id": _short_id(name),
        "title": question,
        "selftext": context,
        "answers": {
            "a_id": [_short_id(f"{name}#{i}") for i in range(len(answers))],
            "text": answers,
            # A stand-in for Reddit votes: longer explanations rank higher.
            "score": [len(answer.split()) for answer in answers],
        },
    }


def documents_from_module(source: str, module: str) -> Iterator[dict[str, Any]]:
    """One document per documented class (answers: its methods), one for the module's functions."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return
    function_docs: list[str] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = _clean(ast.get_docstring(node))
            if len(doc) >= _MIN_ANSWER_CHARS:
                function_docs.append(doc)
        elif isinstance(node, ast.ClassDef):
            method_docs = [
                doc
                for child in node.body
                if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
                and len(doc := _clean(ast.get_docstring(child))) >= _MIN_ANSWER_CHARS
            ]
            if method_docs:
                qualname = f"{module}.{node.name}"
                yield _document(qualname, f"What is {qualname} for?", _clean(ast.get_docstring(node)), method_docs)
    if function_docs:
        yield _document(module, f"What does the {module} module offer?", _clean(ast.get_docstring(tree)), function_docs)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def builtin_documents(max_documents: int, seed: int = 0, root: Path | None = None) -> list[dict[str, Any]]:
    """Up to `max_documents` ELI5-shaped documents, sampled reproducibly across the whole stdlib."""
    root = root or stdlib_root()
    documents: list[dict[str, Any]] = []
    for path in stdlib_sources(root):
        source = path.read_text(encoding="utf-8", errors="replace")
        documents.extend(documents_from_module(source, module_name(path, root)))
    if not documents:
        raise RuntimeError(f"no documented Python sources found under {root}; the builtin corpus needs the stdlib")
    # Shuffle before truncating so a small corpus still spans the whole library, not just 'a*' modules.
    random.Random(seed).shuffle(documents)
    return documents[:max_documents]
