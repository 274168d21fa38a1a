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


class HelpFormatter(argparse.HelpFormatter):
    """Help that ends each option with its default, unless it has none worth saying or its help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        unsaid = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if not action.option_strings or unsaid or "default" in text:
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, each group added by its own module.

    No parser accepts abbreviations (``--epoch`` is refused, not read as ``--epochs``), and ``--verbose`` is
    accepted before or after the command name.
    """
    prog = "chestxray" if Path(sys.argv[0]).name == "chestxray" else "python -m pipeline"
    parser = argparse.ArgumentParser(
        prog=prog, description=__doc__.splitlines()[0], allow_abbrev=False, formatter_class=HelpFormatter
    )
    verbose = f"keep TensorFlow's start-up logging (also: {quiet.VERBOSE_ENV}=1)"
    parser.add_argument("--verbose", action="store_true", help=verbose)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    labels.add_commands(commands)
    training.add_commands(commands)
    prediction.add_commands(commands)
    evaluation.add_commands(commands)
    localization.add_commands(commands)
    for command in commands.choices.values():
        command.allow_abbrev = False
        command.formatter_class = HelpFormatter
        # SUPPRESS: when absent after the command, the value given before it (or False) stays
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose)
    return parser


def command_parser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    """The parser of one command of `build_parser`'s parser."""
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return subparsers.choices[name]


def resolve_checkpoint(path: Path, flag: str = "--checkpoint") -> Path:
    """A checkpoint file as given, or a run folder's ``best.keras``; a folder without one is refused in one line."""
    if not path.is_dir():
        return path
    best = path / "best.keras"
    if best.is_file():
        return best
    raise InputError(
        f"{flag} {path}: a folder without best.keras; give a run folder that holds best.keras, or a .keras file "
        "(a run that stopped early has its epochs in checkpoints/)"
    )


def main(argv: list[str] | None = None) -> int:
    """Run one command; its exit code (2 for bad input, 130 when interrupted, 1 when stdout's reader left)."""
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # said by the command's own parser, so that its usage is the one printed
        command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(unknown)}")
    quiet.silence_tensorflow(args.verbose)
    try:
        for name, flag in (("checkpoint", "--checkpoint"), ("init_from", "--init-from")):
            if getattr(args, name, None) is not None:
                setattr(args, name, resolve_checkpoint(getattr(args, name), flag))
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
