"""Every command line in README.md and docs/*.md works when pasted into a shell in the checkout after `make run`.

Each `chestxray ...` or `python -m pipeline ...` found in a code block or an inline code span must be written
the one way that works there whether the virtualenv is active or not (`.venv/bin/chestxray`), and must parse
with the CLI's own argparse parser; nothing is run.
"""

from __future__ import annotations

import re
import shlex

import pytest
from conftest import REPO

from pipeline.cli import build_parser

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
PREFIX = ".venv/bin/chestxray"
COMMAND = re.compile(r"(?:[\w./-]*/)?(?:chestxray|python3? -m pipeline)(?=\s|$)")
SHELL_ENDS = {"|", "||", "&&", ";", ">", "2>", "&"}


def code_lines(text: str) -> list[str]:
    """The lines of every fenced code block (continuations joined) and every inline code span."""
    lines = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, flags=re.S | re.M):
        lines += block.replace("\\\n", " ").splitlines()
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.S | re.M)
    lines += [span.replace("\n", " ") for span in re.findall(r"`([^`]+)`", prose) if "\n\n" not in span]
    return lines


def commands(text: str) -> list[str]:
    """Each command line from its command word on, up to a pipe, redirection or comment."""
    found = []
    for line in code_lines(text):
        match = COMMAND.search(line)
        if match and line.strip() != "chestxray":  # the command's name alone, in prose
            found.append(line[match.start():])
    return found


def words_of(command: str) -> list[str]:
    words = shlex.split(command, comments=True)
    for k, word in enumerate(words):
        if word in SHELL_ENDS:
            return words[:k]
    return words


CASES = [(doc.name, command) for doc in DOCUMENTS for command in commands(doc.read_text())]


def test_the_readme_shows_commands_and_the_two_make_targets():
    readme = (REPO / "README.md").read_text()
    assert sum(doc == "README.md" for doc, _ in CASES) >= 10
    head = readme[:600]
    assert "make run" in head and "make test" in head
    assert readme.index("## Dashboard") < readme.index("## Command line") < 12_000
    assert "docs/full-scale.md" in readme and (REPO / "docs" / "full-scale.md").is_file()


@pytest.mark.parametrize(("document", "command"), CASES, ids=[f"{d}:{c[:60]}" for d, c in CASES])
def test_command_is_written_to_work_and_parses(document, command):
    words = words_of(command)
    assert words[0] == PREFIX, f"{document}: write `{PREFIX} ...` (works pasted after `make run`): {command}"
    if words[1:] in (["COMMAND"], ["--help"]) or "--help" in words:
        return
    try:
        build_parser().parse_args(words[1:])
    except SystemExit as exc:
        pytest.fail(f"{document}: does not parse (exit {exc.code}): {command}")


def test_make_run_installs_the_command_the_docs_use():
    """`.venv/bin/chestxray` exists after `make run`: the Makefile installs the checkout, which declares it."""
    import tomllib

    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["chestxray"] == "pipeline.cli:main"
    makefile = (REPO / "Makefile").read_text()
    assert "VENV := .venv" in makefile and "$(VENV)/bin/pip install --quiet --no-deps -e ." in makefile
    assert "run: $(STAMP)" in makefile and "test: $(STAMP)" in makefile
