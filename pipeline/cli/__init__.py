"""`python -m pipeline COMMAND`: the command line over the library.

Every command turns an `InputError` into one line on stderr and exit code 2, never a traceback; parameter
names the library quotes in backticks (`` `n_bootstrap` ``) are printed as the flags that set them
(``--bootstrap``). Heavy modules (TensorFlow) are imported inside the commands that need them, so `stats`
and `leakage` start fast. One module per command group; nothing in the library imports this package.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

from pipeline.cli import evaluation, labels, localization, prediction, training
from pipeline.core import quiet
from pipeline.core.errors import InputError

# Library parameter -> the flag that sets it, for error messages.
FLAGS = {
    "age_edges": "--age-groups",
    "batch_size": "--batch-size",
    "checkpoint": "--checkpoint",
    "epochs": "--epochs",
    "false_alarm_rate": "--false-alarm-rate",
    "init_from": "--init-from",
    "jit_compile": "--jit-compile",
    "loss": "--loss",
    "miss_rate": "--miss-rate",
    "mixed_precision": "--mixed-precision",
    "out_dir": "--out",
    "patience": "--patience",
    "resume": "--resume",
    "seed": "--seed",
    "strategy": "--strategy",
    "subgroup_min": "--subgroup-min",
    "workers": "--workers",
    "gradcam_dir": "--gradcam",
    "image_size": "--image-size",
    "images": "--images",
    "images_dir": "--images",
    "lr": "--lr",
    "n_bootstrap": "--bootstrap",
    "predictions_file": "--predictions",
    "target_sensitivity": "--target-sensitivity",
    "test": "--test",
    "test_list": "--test-list",
    "thresholds_file": "--thresholds",
    "top": "--top",
    "valid": "--valid",
    "valid_labels": "--valid-labels",
    "valid_predictions": "--valid-predictions",
    "weights": "--weights",
}
_QUOTED = re.compile(r"`([a-z_]+)`")


def as_flags(message: str) -> str:
    """A library message with each quoted parameter name (`` `n_bootstrap` ``) replaced by its flag."""
    return _QUOTED.sub(lambda match: FLAGS.get(match[1], match[0]), message)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, each group added by its own module."""
    prog = "chestxray" if Path(sys.argv[0]).name == "chestxray" else "python -m pipeline"
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    parser.add_argument(
        "--verbose", action="store_true", help=f"keep TensorFlow's start-up logging (also: {quiet.VERBOSE_ENV}=1)"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    labels.add_commands(commands)
    training.add_commands(commands)
    prediction.add_commands(commands)
    evaluation.add_commands(commands)
    localization.add_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (2 for bad input, 130 when interrupted, 1 when stdout's reader left)."""
    args = build_parser().parse_args(argv)
    quiet.silence_tensorflow(args.verbose)
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the frame, so that a reader gone away (`| head`) is seen here
        return code
    except InputError as exc:
        print(f"error: {as_flags(str(exc))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader of stdout (`stats --json | head`) has closed it: stop quietly, and point stdout at
        # /dev/null so that Python's own flush at exit does not report the same broken pipe again
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 1


def warn(message: str) -> None:
    """Print a library warning the way every command does."""
    print(f"warning: {as_flags(message)}", file=sys.stderr)
