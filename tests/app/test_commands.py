"""The command lines the dashboard prints parse with the CLI's own parser, and name files that exist."""

from __future__ import annotations

import shlex
import sys

import pytest
from conftest import REPO

from pipeline.cli import build_parser

PREFIX = [".venv/bin/chestxray"]  # as every command in the README


@pytest.fixture(scope="module")
def shared():
    sys.path.insert(0, str(REPO / "app"))  # as Streamlit does for the scripts it runs
    try:
        import shared as module
    finally:
        sys.path.remove(str(REPO / "app"))
    return module


def parse(command: str):
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:1] == PREFIX, command
    return build_parser().parse_args(argv[1:])


def test_the_train_command_parses_and_its_inputs_exist(shared):
    args = parse(shared.train_command())
    assert args.command == "train" and args.func.__name__ == "run_train"
    for path in (args.train, args.valid, args.images):
        assert (REPO / path).exists(), path
    assert str(args.out) == "artifacts/runs/demo"


def test_the_evaluate_command_parses_and_its_inputs_exist(shared):
    run = REPO / "artifacts" / "runs" / "demo"
    args = parse(shared.evaluate_command(run / "best.keras", run / "eval-test"))
    assert args.command == "evaluate" and args.func.__name__ == "run_evaluate"
    assert str(args.checkpoint) == "artifacts/runs/demo/best.keras" and str(args.out) == "artifacts/runs/demo/eval-test"
    for path in (args.labels, args.images, args.valid_labels):
        assert (REPO / path).exists(), path
