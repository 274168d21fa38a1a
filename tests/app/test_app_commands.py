"""The commands the dashboard prints work: each parses with the CLI's own parser and carries the run's settings.

The shipped `densenet121-128-plain` run has evaluations but no checkpoint: every page that shows it says so
and prints a train command that rebuilds that run (`--weights none --loss plain --image-size 128`).
"""

from __future__ import annotations

import shlex

import pytest
from conftest import REPO
from test_app import MAIN, TIMEOUT, artifacts, open_page, text, widget  # noqa: F401 (a fixture)

from pipeline.cli import build_parser
from pipeline.training import runs

PLAIN = REPO / "artifacts" / "runs" / "densenet121-128-plain"


def printed_commands(at) -> list[list[str]]:
    """The words of every command line in the page's code blocks, continuation lines joined."""
    commands = []
    for block in at.code:
        for line in block.value.replace("\\\n", " ").splitlines():
            if line.strip():
                commands.append(shlex.split(line))
    return commands


def parse(words: list[str]):
    assert words[0] == ".venv/bin/chestxray", words  # the README's way: works pasted in the checkout
    return build_parser().parse_args(words[1:])


@pytest.mark.parametrize("page", ["home", "performance", "predict"])
def test_a_run_without_checkpoint_says_so_and_its_train_command_rebuilds_it(page, monkeypatch):
    from streamlit.testing.v1 import AppTest

    assert not (PLAIN / "best.keras").exists() and (PLAIN / "config.json").is_file()
    monkeypatch.delenv("CHESTXRAY_ARTIFACTS", raising=False)
    monkeypatch.chdir(REPO)
    at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
    at.run()
    widget(at.sidebar.selectbox, "Run").set_value(PLAIN.name).run()
    if page != "home":
        open_page(at, page)
    assert not at.exception
    assert f"Run {PLAIN.name} has no checkpoint" in text(at)
    trains = [parse(words) for words in printed_commands(at) if words[1] == "train"]
    assert trains, "no train command printed"
    config = runs.read_config(PLAIN)
    for args in trains:
        assert (args.weights, args.loss, args.image_size) == ("none", "plain", 128)
        assert (args.epochs, args.batch_size, args.lr, args.patience, args.seed) == (
            config["epochs"], config["batch_size"], config["lr"], config["patience"], config["seed"])
        assert (str(args.train), str(args.valid), str(args.images)) == (config["train"], config["valid"],
                                                                       config["images"])
        assert args.out.resolve() == PLAIN.resolve()


def test_every_printed_command_parses(artifacts, tmp_path, monkeypatch):  # noqa: F811 (the fixture)
    """Pages with a run, with no run at all: every command shown parses with the CLI's parser."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.chdir(REPO)
    seen = 0
    for folder in (artifacts, tmp_path):
        monkeypatch.setenv("CHESTXRAY_ARTIFACTS", str(folder))
        at = AppTest.from_file(MAIN, default_timeout=TIMEOUT)
        at.run()
        for page in ("home", "performance", "predict"):
            if page != "home":
                open_page(at, page)
            for words in printed_commands(at):
                parse(words)
                seen += 1
    assert seen >= 3
