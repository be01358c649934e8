"""python -m lmpipe.cli: the same as the `lmpipe` command."""

from lmpipe.cli.main import entry_point

entry_point()
