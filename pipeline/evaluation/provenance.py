"""Which checkpoint an evaluation scored: the one rule that lets operating thresholds and conformal guarantees be
applied to a checkpoint only when they were measured on the same weights.

`evaluate` records the SHA-256 of the checkpoint it scored in metrics.json (``checkpoint_sha256``); the ONNX export
records the SHA-256 of the ``.keras`` it was made from in its ``.onnx.json`` (`pipeline.inference.serving`). A
``.keras`` matches by its own hash and an ``.onnx`` by that source hash, so a renamed or moved file of the same
weights still matches and a retrained file under the same name does not. An evaluation written before the hash was
recorded matches by file stem only, and says so in one line; one made from a predictions file names no checkpoint
and matches none. Hashes are remembered per (path, size, modification time), so the dashboard may ask on every rerun.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import InputError
from pipeline.core.files import sha256_cached
from pipeline.evaluation.results import read_metrics
from pipeline.inference import serving

REEVALUATE = "re-run evaluate to bind them to this checkpoint"


class Binding(enum.Enum):
    """How an evaluation relates to a checkpoint."""

    SAME_WEIGHTS = "same weights"  # the recorded SHA-256 is the checkpoint's
    SAME_NAME = "file name only"  # an older metrics.json without a hash, same file stem
    OTHER_WEIGHTS = "other weights"
    NO_CHECKPOINT = "no checkpoint"  # evaluated from a predictions file
    UNKNOWN = "unknown"  # the evaluation or the checkpoint's hash cannot be read


@dataclass(frozen=True)
class Match:
    """Whether an evaluation's thresholds may be applied to a checkpoint (``ok``), and one line for the user
    (``note``): that the match rests on the file name only, or why there is none; None for the same weights."""

    binding: Binding
    note: str | None

    @property
    def ok(self) -> bool:
        return self.binding in (Binding.SAME_WEIGHTS, Binding.SAME_NAME)


def weights_sha256(checkpoint: str | Path) -> str | None:
    """The SHA-256 of the weights a file holds: a ``.keras`` file's own, an ``.onnx`` export's source checkpoint's
    (from its ``.onnx.json``); None when it cannot be read."""
    checkpoint = Path(checkpoint)
    if checkpoint.suffix == ".onnx":
        info = serving.read_export_info(serving.export_paths(checkpoint)[1])
        found = None if isinstance(info, str) else info.get("checkpoint_sha256")
        return found if isinstance(found, str) else None
    try:
        return sha256_cached(checkpoint)
    except OSError:
        return None


def match(eval_dir: str | Path, checkpoint: str | Path, shown: str | None = None) -> Match:
    """Whether the evaluation in ``eval_dir`` scored ``checkpoint`` (a ``.keras`` file or its ``.onnx`` export).

    ``shown`` is the evaluation folder as the user should read it in the note (default: ``eval_dir``).
    """
    where, name = shown or str(eval_dir), Path(checkpoint).name
    try:
        summary = read_metrics(eval_dir)
    except InputError as exc:
        return Match(Binding.UNKNOWN, str(exc))
    if summary.checkpoint is None:
        return Match(Binding.NO_CHECKPOINT, f"{where} was evaluated from a predictions file, which names no "
                                            f"checkpoint, so its thresholds promise nothing for {name}; evaluate "
                                            "this checkpoint")
    if summary.checkpoint_sha256 is None:  # written before the hash was recorded
        if Path(summary.checkpoint).stem == Path(checkpoint).stem:
            return Match(Binding.SAME_NAME, f"thresholds from {where}, matched by file name only: {REEVALUATE}")
        return Match(Binding.OTHER_WEIGHTS, f"{where} evaluated another checkpoint than {name} "
                                            f"({Path(summary.checkpoint).name}), so its thresholds promise nothing "
                                            "for it; evaluate this one")
    found = weights_sha256(checkpoint)
    if found is None:
        return Match(Binding.UNKNOWN, f"the weights of {name} cannot be read to check that {where} evaluated them; "
                                      "evaluate this checkpoint")
    if found != summary.checkpoint_sha256:
        return Match(Binding.OTHER_WEIGHTS, f"{where} evaluated other weights than those now in {name} (their "
                                            "SHA-256 differs), so its thresholds promise nothing for it; evaluate "
                                            "this one")
    return Match(Binding.SAME_WEIGHTS, None)
