"""The README is the front door: its config reference must match the code."""

from pathlib import Path

from lmpipe.config.reference import markdown_reference

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_config_reference_is_generated_from_the_current_config_tree():
    assert markdown_reference() in README.read_text(), (
        "README config reference is stale: regenerate it with `lmpipe config --reference`"
    )


def test_readme_quickstart_names_the_two_commands_ci_uses():
    text = README.read_text()
    assert "make run" in text and "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci
