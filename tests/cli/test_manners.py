"""Command-line manners: usage of the right command, defaults in --help, no abbreviations, help on every option,
run folders as checkpoints, predict's ranked table with thresholds, compare's reasons, plurals."""

from __future__ import annotations

import json

import pytest
from conftest import REPO, TEST_DATA, assert_one_line_error, run_main

from pipeline.cli import build_parser, command_parser
from pipeline.core.text import count
from pipeline.evaluation import results

DEMO_RUN = REPO / "artifacts" / "runs" / "densenet121-128-weighted"
COMMANDS = ("stats", "leakage", "split", "prepare", "audit", "train", "predict", "export", "evaluate", "compare",
            "localize")


def test_unknown_option_after_a_command_prints_that_commands_usage(capsys):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["stats", "--labels", "x.csv", "--bogus"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "usage: " in err and " stats " in err and "--labels LABELS" in err
    assert "unrecognized arguments: --bogus" in err


@pytest.mark.parametrize("argv", [["train", "--train", "a", "--valid", "b", "--out", "c", "--epoch", "3"],
                                  ["evaluate", "--predictions", "p", "--labels", "l", "--out", "o", "--plot"]])
def test_abbreviations_are_refused(capsys, argv):
    from pipeline.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert f"unrecognized arguments: {argv[-1] if argv[-1] == '--plot' else '--epoch 3'}" in capsys.readouterr().err


def test_help_shows_the_defaults_and_every_option_has_help():
    parser = build_parser()
    train_help = command_parser(parser, "train").format_help()
    for default in ("(default: 320)", "(default: 10)", "(default: 16)", "(default: 0.0001)", "(default: imagenet)"):
        assert default in train_help, default
    for name in COMMANDS:
        for action in command_parser(parser, name)._actions:
            assert action.help, f"{name} {action.option_strings or action.dest} has no help text"
    assert not parser.allow_abbrev
    assert all(not command_parser(parser, name).allow_abbrev for name in COMMANDS)


def test_verbose_is_accepted_after_the_command_name():
    parser = build_parser()
    assert parser.parse_args(["stats", "--labels", "x", "--verbose"]).verbose is True
    assert parser.parse_args(["--verbose", "stats", "--labels", "x"]).verbose is True
    assert parser.parse_args(["stats", "--labels", "x"]).verbose is False


def test_a_run_folder_without_best_keras_is_refused_naming_it(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    code, _, err = run_main(capsys, "predict", "--checkpoint", tmp_path / "run", TEST_DATA / "00000001_000.png")
    assert_one_line_error(code, err, "best.keras", "--checkpoint")


def test_predict_from_a_run_folder_ranks_findings_with_thresholds_and_positive_marks(capsys):
    """As the dashboard: findings by falling probability, each threshold shown, POSITIVE where it is reached."""
    image = TEST_DATA / "00000001_000.png"
    code, out, err = run_main(capsys, "predict", "--checkpoint", DEMO_RUN, image)
    assert code == 0, err
    thresholds = results.read_metrics(DEMO_RUN / "eval-test").thresholds
    assert "eval-test" in out.splitlines()[0]
    rows = [line.split() for line in out.splitlines() if line.startswith("  ") and line.split()[0] in thresholds]
    assert len(rows) == 14
    probabilities = [float(row[1]) for row in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    for finding, p, limit, *mark in rows:
        assert float(limit) == pytest.approx(thresholds[finding], abs=5e-4)
        assert (mark == ["POSITIVE"]) == (float(p) >= float(limit)), (finding, p, limit)
    code, out, _ = run_main(capsys, "predict", "--checkpoint", DEMO_RUN, image, "--json")
    assert code == 0 and json.loads(out)["probabilities"]["Atelectasis"] >= 0


def test_compare_says_why_a_p_value_is_missing(capsys, evaluated, second):
    code, out, err = run_main(capsys, "compare", evaluated[0], second, "--bootstrap", "20")
    assert code == 0, err
    assert "DeLong p '-': mean: the test is per finding" in out
    assert "Edema: fewer than 2 positive" in out  # nih/test.csv has exactly one Edema image


def test_counts_agree_with_their_nouns():
    assert [count(1, "image"), count(2, "image"), count(1, "process"), count(3, "process")] == [
        "1 image", "2 images", "1 process", "3 processes"]
    assert count(1_024, "shard") == "1,024 shards"
