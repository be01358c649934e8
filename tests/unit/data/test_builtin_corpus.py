"""lmpipe.data.builtin_corpus: ELI5-shaped documents generated offline from the stdlib's docstrings."""

from __future__ import annotations

import textwrap

import pytest

from lmpipe.data.builtin_corpus import (
    builtin_documents,
    documents_from_module,
    module_name,
    stdlib_root,
    stdlib_sources,
)


@pytest.fixture(scope="module")
def corpus() -> list[dict]:
    return builtin_documents(1000, seed=0)


@pytest.fixture(scope="module")
def json_package_root():
    """A small slice of the stdlib, for tests that only need a few documents."""
    return stdlib_root() / "json"


def test_documents_have_the_eli5_shape(corpus):
    assert corpus
    for document in corpus:
        assert set(document) == {"q_id", "title", "selftext", "answers"}
        assert isinstance(document["q_id"], str) and document["q_id"]
        assert isinstance(document["title"], str) and document["title"].endswith("?")
        assert isinstance(document["selftext"], str)
        answers = document["answers"]
        assert set(answers) == {"a_id", "text", "score"}
        assert len(answers["text"]) >= 1
        assert len(answers["a_id"]) == len(answers["text"]) == len(answers["score"])
        assert all(isinstance(text, str) and text for text in answers["text"])
        assert all(isinstance(score, int) for score in answers["score"])


def test_question_ids_are_unique(corpus):
    ids = [document["q_id"] for document in corpus]
    assert len(set(ids)) == len(ids)


def test_corpus_is_substantial_english_text(corpus):
    assert len(corpus) > 500
    answer_chars = sum(len(text) for document in corpus for text in document["answers"]["text"])
    assert answer_chars > 100_000
    words = " ".join(text for document in corpus[:200] for text in document["answers"]["text"]).lower().split()
    for common in ("the", "of", "and", "is", "to"):
        assert words.count(common) > 100, common


def test_same_seed_gives_the_same_documents():
    # A sub-package keeps this fast; the sampling code is the same as for the whole library.
    root = stdlib_root() / "email"
    first = builtin_documents(30, seed=7, root=root)
    assert len(first) == 30
    assert builtin_documents(30, seed=7, root=root) == first


def test_different_seed_gives_a_different_order(json_package_root):
    first = builtin_documents(100, seed=0, root=json_package_root)
    second = builtin_documents(100, seed=1, root=json_package_root)
    assert len(first) > 2
    assert sorted(d["q_id"] for d in first) == sorted(d["q_id"] for d in second)
    assert [d["q_id"] for d in first] != [d["q_id"] for d in second]


def test_max_documents_caps_the_corpus(json_package_root):
    everything = builtin_documents(1000, seed=0, root=json_package_root)
    assert len(everything) > 3
    assert builtin_documents(3, seed=0, root=json_package_root) == everything[:3]
    assert len(builtin_documents(1, seed=0, root=json_package_root)) == 1


def test_a_root_without_python_sources_is_an_error(tmp_path):
    with pytest.raises(RuntimeError, match="no documented Python sources"):
        builtin_documents(10, root=tmp_path)


def test_test_suites_are_not_part_of_the_corpus():
    root = stdlib_root()
    sources = stdlib_sources(root)
    assert sources == sorted(sources)
    assert all("test" not in path.relative_to(root).parts for path in sources)
    assert all("site-packages" not in path.relative_to(root).parts for path in sources)


def test_class_becomes_a_question_answered_by_its_method_docstrings():
    source = textwrap.dedent('''
        """A module about widgets."""

        class Widget:
            """A thing with knobs that can be turned."""

            def turn(self):
                """Turn the knob a little to the right, which raises the volume."""

            def short(self):
                """Too short."""

            def undocumented(self):
                pass

        def build_widget():
            """Create a widget with all of its knobs turned fully to the left."""

        def tiny():
            """Nope."""
    ''')
    class_doc, module_doc = list(documents_from_module(source, "widgets"))
    assert class_doc["title"] == "What is widgets.Widget for?"
    assert class_doc["selftext"] == "A thing with knobs that can be turned."
    assert class_doc["answers"]["text"] == ["Turn the knob a little to the right, which raises the volume."]
    assert class_doc["answers"]["score"] == [12]  # words in the answer
    assert module_doc["title"] == "What does the widgets module offer?"
    assert module_doc["selftext"] == "A module about widgets."
    assert module_doc["answers"]["text"] == ["Create a widget with all of its knobs turned fully to the left."]


def test_unparsable_source_yields_no_documents():
    assert list(documents_from_module("def broken(:\n", "broken")) == []


def test_module_name_drops_init(tmp_path):
    assert module_name(tmp_path / "json" / "__init__.py", tmp_path) == "json"
    assert module_name(tmp_path / "json" / "decoder.py", tmp_path) == "json.decoder"
