"""The evaluation folder: its file names, its typed `Summary` (``metrics.json``), and its one reader and writer.

An evaluation folder is self-describing; the dashboard, `evaluation.compare` and `training.runs` read nothing else:

- ``predictions.csv``: ``Image`` and the 14 probabilities;
- ``labels.csv``: the labels scored against, in the course format (``Image``, the 14 findings, ``PatientId``);
- ``metrics.json``: per finding the AUC with its bootstrap 95% interval, average precision, prevalence, the
  operating threshold and sensitivity, specificity, PPV, NPV, F1 and confusion counts there, Brier score and
  calibration; the macro mean AUC with its interval; where the predictions, labels and thresholds came from;
- ``roc.csv``, ``pr.csv``, ``calibration.csv``: the curves, so that plots need no recomputation;
- with ``evaluate --plots``, ``curves.html``: the figures of `pipeline.plots` on one self-contained page.

Each file is written through a temporary file and a rename, and ``metrics.json`` last, so a folder with a
``metrics.json`` is complete. `Summary.to_json` writes the keys in the order earlier versions wrote them, so
``metrics.json`` stays byte for byte what it was. Imports no TensorFlow.

About 400 lines, kept whole on purpose: every file format of an evaluation folder (and the predictions CSV and
thresholds JSON users hand to ``evaluate``, which share them) is defined, read and written here and nowhere else.
"""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError, first_items, reason
from pipeline.core.files import output_folder, write_csv_atomic, write_json_atomic
from pipeline.core.findings import FINDINGS
from pipeline.data import label_files

PREDICTIONS_CSV = "predictions.csv"
LABELS_CSV = "labels.csv"
METRICS_JSON = "metrics.json"
ROC_CSV = "roc.csv"
PR_CSV = "pr.csv"
CALIBRATION_CSV = "calibration.csv"
DEFAULT_THRESHOLD = 0.5
RERUN = "run the evaluation again"


class ThresholdSource(enum.Enum):
    """Where an evaluation's operating thresholds came from; ``metrics.json`` stores `key`."""

    GIVEN = "given"  # passed to `pipeline.evaluation.evaluate.evaluate_predictions` by a caller
    FILE = "file"
    VALIDATION_YOUDEN = "validation_youden"
    VALIDATION_SENSITIVITY = "validation_sensitivity"  # stored as validation_sensitivity_<target>
    DEFAULT = "default_0.5"

    def key(self, target_sensitivity: float | None = None) -> str:
        """The ``threshold_source`` string of metrics.json (``validation_sensitivity_0.8`` carries its target)."""
        if self is ThresholdSource.VALIDATION_SENSITIVITY:
            return f"{self.value}_{target_sensitivity:g}"
        return self.value

    def describe(self, target_sensitivity: float | None = None) -> str:
        """How the thresholds were chosen, in words, for pages and reports."""
        if self is ThresholdSource.VALIDATION_SENSITIVITY:
            return f"chosen on validation data (lowest threshold reaching sensitivity {target_sensitivity:g})"
        return {
            ThresholdSource.GIVEN: "given by the caller",
            ThresholdSource.FILE: "read from a thresholds file",
            ThresholdSource.VALIDATION_YOUDEN: "chosen on validation data (maximum Youden's J)",
            ThresholdSource.DEFAULT: "0.5 for every finding (no validation data given)",
        }[self]

    @classmethod
    def parse(cls, key: str) -> tuple[ThresholdSource, float | None]:
        """The source and target sensitivity of a ``threshold_source`` string (`ValueError` when unknown)."""
        prefix = cls.VALIDATION_SENSITIVITY.value + "_"
        if key.startswith(prefix):
            return cls.VALIDATION_SENSITIVITY, float(key.removeprefix(prefix))
        return cls(key), None


@dataclass
class OperatingPoint:
    """Rates and confusion counts of one finding at its threshold (None where a rate has no denominator)."""

    sensitivity: float | None
    specificity: float | None
    ppv: float | None
    npv: float | None
    f1: float | None
    tp: int
    fp: int
    tn: int
    fn: int


@dataclass
class Reliability:
    """One finding's reliability curve over equal-width probability bins (None for an empty bin)."""

    mean_predicted: list[float | None]
    observed: list[float | None]
    count: list[int]


@dataclass
class Bootstrap:
    """How the AUC intervals were resampled."""

    n_resamples: int
    seed: int
    method: str
    valid_resamples: dict[str, int | None]
    mean_valid_resamples: int | None


@dataclass
class Summary:
    """``metrics.json`` in memory. Per-finding dicts are keyed by finding name; None marks an undefined value.

    The provenance fields (``created`` to ``labels_sha256``) are None for an evaluation computed in a notebook
    and not written by the command line; they are written only when ``created`` is set.
    """

    n_images: int
    findings: list[str]
    n_positive: dict[str, int]
    prevalence: dict[str, float]
    auc: dict[str, float | None]
    auc_ci: dict[str, list[float] | None]
    mean_auc: float | None
    mean_auc_ci: list[float] | None
    average_precision: dict[str, float | None]
    threshold_source: ThresholdSource
    thresholds: dict[str, float]
    at_threshold: dict[str, OperatingPoint]
    brier: dict[str, float | None]
    calibration: dict[str, Reliability]
    bootstrap: Bootstrap
    notes: list[str]
    target_sensitivity: float | None = None  # part of the threshold_source key
    created: str | None = None
    checkpoint: str | None = None
    predictions_file: str | None = None
    labels_file: str | None = None
    labels_sha256: str | None = None
    skipped_images: dict[str, str] = field(default_factory=dict)

    @property
    def threshold_key(self) -> str:
        """The ``threshold_source`` string as stored in metrics.json."""
        return self.threshold_source.key(self.target_sensitivity)

    @property
    def model_source(self) -> str | None:
        """The checkpoint evaluated, else the predictions file read."""
        return self.checkpoint or self.predictions_file

    def to_json(self) -> dict[str, Any]:
        """The metrics.json object, keys in their published order."""
        provenance: dict[str, Any] = {}
        if self.created is not None:
            provenance = {
                "created": self.created,
                "checkpoint": self.checkpoint,
                "predictions_file": self.predictions_file,
                "labels_file": self.labels_file,
                "labels_sha256": self.labels_sha256,
                **({"skipped_images": dict(self.skipped_images)} if self.skipped_images else {}),
            }
        return {
            **provenance,
            "n_images": self.n_images,
            "findings": list(self.findings),
            "n_positive": dict(self.n_positive),
            "prevalence": dict(self.prevalence),
            "auc": dict(self.auc),
            "auc_ci": dict(self.auc_ci),
            "mean_auc": self.mean_auc,
            "mean_auc_ci": self.mean_auc_ci,
            "average_precision": dict(self.average_precision),
            "threshold_source": self.threshold_key,
            "thresholds": dict(self.thresholds),
            "at_threshold": {finding: asdict(point) for finding, point in self.at_threshold.items()},
            "brier": dict(self.brier),
            "calibration": {finding: asdict(curve) for finding, curve in self.calibration.items()},
            "bootstrap": asdict(self.bootstrap),
            "notes": list(self.notes),
        }

    @classmethod
    def from_json(cls, content: Any, source: str = METRICS_JSON) -> Summary:
        """A `Summary` from a parsed metrics.json; `InputError` naming ``source`` when it is not one."""
        if not isinstance(content, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(content).__name__}; {RERUN}")
        try:
            threshold_source, target = ThresholdSource.parse(content["threshold_source"])
            findings = [str(f) for f in content["findings"]]
            summary = cls(
                n_images=int(content["n_images"]),
                findings=findings,
                n_positive=_per_finding(content, "n_positive", findings),
                prevalence=_per_finding(content, "prevalence", findings),
                auc=_per_finding(content, "auc", findings),
                auc_ci=_per_finding(content, "auc_ci", findings),
                mean_auc=content["mean_auc"],
                mean_auc_ci=content["mean_auc_ci"],
                average_precision=_per_finding(content, "average_precision", findings),
                threshold_source=threshold_source,
                target_sensitivity=target,
                thresholds={f: float(t) for f, t in _per_finding(content, "thresholds", findings).items()},
                at_threshold={
                    f: OperatingPoint(**p) for f, p in _per_finding(content, "at_threshold", findings).items()
                },
                brier=_per_finding(content, "brier", findings),
                calibration={f: Reliability(**c) for f, c in _per_finding(content, "calibration", findings).items()},
                bootstrap=Bootstrap(**content["bootstrap"]),
                notes=[str(note) for note in content["notes"]],
                created=content.get("created"),
                checkpoint=content.get("checkpoint"),
                predictions_file=content.get("predictions_file"),
                labels_file=content.get("labels_file"),
                labels_sha256=content.get("labels_sha256"),
                skipped_images=dict(content.get("skipped_images") or {}),
            )
        except KeyError as exc:
            raise InputError(f"{source}: no {exc.args[0]!r} entry; {RERUN}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{source}: not a metrics.json of this toolkit ({reason(exc)}); {RERUN}") from None
        return summary


@dataclass
class Evaluation:
    """Everything an evaluation folder holds, in memory (see `write_evaluation`)."""

    summary: Summary
    predictions: pd.DataFrame  # Image + 14 probabilities, in the order of the labels
    labels: pd.DataFrame  # canonical label table
    roc: pd.DataFrame  # finding, fpr, tpr, threshold
    pr: pd.DataFrame  # finding, recall, precision, threshold (NaN for the last point, recall 0)
    calibration: pd.DataFrame  # finding, bin, bin_low, bin_high, mean_predicted, observed, count


@dataclass
class SavedEvaluation:
    """An evaluation folder read for display: its summary and curves (`read_evaluation`)."""

    folder: Path
    summary: Summary
    roc: pd.DataFrame
    pr: pd.DataFrame
    calibration: pd.DataFrame


# --- writing ---------------------------------------------------------------------------------------------------


def write_evaluation(evaluation: Evaluation, out_dir: str | Path) -> Path:
    """Write an evaluation folder (see the module docstring); returns its metrics.json."""
    out = output_folder(out_dir)
    # A stale metrics.json would vouch for the half-replaced files below until the new one is written.
    (out / METRICS_JSON).unlink(missing_ok=True)
    write_csv_atomic(evaluation.predictions, out / PREDICTIONS_CSV)
    write_csv_atomic(label_files.to_course_format(evaluation.labels), out / LABELS_CSV)
    write_csv_atomic(evaluation.roc, out / ROC_CSV)
    write_csv_atomic(evaluation.pr, out / PR_CSV)
    write_csv_atomic(evaluation.calibration, out / CALIBRATION_CSV)
    write_json_atomic(evaluation.summary.to_json(), out / METRICS_JSON)
    return out / METRICS_JSON


# --- reading ---------------------------------------------------------------------------------------------------


def read_metrics(eval_dir: str | Path) -> Summary:
    """An evaluation folder's ``metrics.json`` as a `Summary` (`InputError` when missing or not one)."""
    folder = Path(eval_dir)
    path = folder / METRICS_JSON
    if not path.is_file():
        raise InputError(f"{folder}: not an evaluation folder (no {METRICS_JSON}); run `python -m pipeline evaluate`")
    try:
        content = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable ({reason(exc)}); {RERUN}") from None
    return Summary.from_json(content, str(path))


def read_evaluation(eval_dir: str | Path) -> SavedEvaluation:
    """An evaluation folder's summary and its ROC, PR and calibration curves, for display."""
    folder = Path(eval_dir)
    summary = read_metrics(folder)
    frames = {}
    for name in (ROC_CSV, PR_CSV, CALIBRATION_CSV):
        path = folder / name
        if not path.is_file():
            raise InputError(f"{folder}: {name} is missing; {RERUN}")
        try:
            frames[name] = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
            raise InputError(f"{path}: cannot be read as CSV ({reason(exc)}); {RERUN}") from None
    return SavedEvaluation(folder, summary, frames[ROC_CSV], frames[PR_CSV], frames[CALIBRATION_CSV])


def read_scored(eval_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """An evaluation folder's labels and its predictions in the labels' order."""
    folder = Path(eval_dir)
    for name in (PREDICTIONS_CSV, LABELS_CSV):
        if not (folder / name).is_file():
            raise InputError(f"{folder}: {name} is missing; {RERUN}")
    labels = label_files.load_labels(folder / LABELS_CSV)
    predictions = read_predictions(folder / PREDICTIONS_CSV)
    return labels, align(labels, predictions, f"{folder}/{LABELS_CSV}", f"{folder}/{PREDICTIONS_CSV}")


def read_predictions(path: str | Path) -> pd.DataFrame:
    """Read a predictions CSV: ``Image`` and one probability column per finding (other columns are ignored).

    Raises
    ------
    InputError
        A missing column, a duplicated image, or a probability that is empty, not a number or outside [0, 1].
    """
    path = Path(path)
    raw = label_files.read_csv(path)
    need = "a predictions CSV needs Image and one probability column per finding"
    missing = [c for c in ("Image", *FINDINGS) if c not in raw.columns]
    if missing:
        raise InputError(f"{path.name}: missing column {first_items(missing)}; {need}")
    table = pd.DataFrame({"Image": raw["Image"].astype(str).str.strip()})
    for finding in FINDINGS:
        values = pd.to_numeric(raw[finding], errors="coerce")
        bad = values.isna() | (values < 0) | (values > 1)
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise InputError(
                f"{path.name}: column {finding!r} row {row + 2} has {raw[finding].iloc[row]!r}; "
                "probabilities must be numbers from 0 to 1"
            )
        table[finding] = values.astype(np.float64).to_numpy()
    duplicated = table["Image"][table["Image"].duplicated()]
    if len(duplicated):
        raise InputError(f"{path.name}: image {duplicated.iloc[0]!r} has more than one row; keep one per image")
    return table


def read_thresholds(path: str | Path) -> dict[str, float]:
    """Read ``{finding: threshold}`` for all 14 findings from a JSON file, or the ``thresholds`` of a metrics.json."""
    path = Path(path)
    hint = 'give a JSON object {"Atelectasis": 0.31, ...} with all 14 findings, or an evaluation\'s metrics.json'
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(f"{path}: file not found; {hint}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path.name}: not readable JSON ({reason(exc)}); {hint}") from None
    if isinstance(content, dict) and isinstance(content.get("thresholds"), dict):
        content = content["thresholds"]
    if not isinstance(content, dict):
        raise InputError(f"{path.name}: not a JSON object; {hint}")
    missing = [f for f in FINDINGS if f not in content]
    if missing:
        raise InputError(f"{path.name}: no threshold for {first_items(missing)}; {hint}")
    bad = [f for f in FINDINGS if isinstance(content[f], bool) or not isinstance(content[f], int | float)]
    if bad:
        raise InputError(f"{path.name}: threshold of {bad[0]} is {content[bad[0]]!r}, not a number; {hint}")
    return {f: float(content[f]) for f in FINDINGS}


def align(labels: pd.DataFrame, predictions: pd.DataFrame, labels_name: str, predictions_name: str) -> pd.DataFrame:
    """The predictions in the order of the labels; `InputError` unless both cover exactly the same images."""
    labelled, predicted = pd.Index(labels["Image"]), pd.Index(predictions["Image"])
    unpredicted = labelled.difference(predicted, sort=False)
    unlabelled = predicted.difference(labelled, sort=False)
    if len(unpredicted) or len(unlabelled):
        problems = []
        if len(unpredicted):
            problems.append(
                f"{len(unpredicted)} of {len(labelled)} labelled images have no prediction ({first_items(unpredicted)})"
            )
        if len(unlabelled):
            problems.append(f"{len(unlabelled)} predicted images have no label ({first_items(unlabelled)})")
        raise InputError(
            f"{predictions_name} and {labels_name} do not cover the same images: {'; '.join(problems)}; "
            "predict exactly the labelled images"
        )
    return predictions.set_index("Image").loc[labelled].reset_index()


def _per_finding(content: dict[str, Any], key: str, findings: list[str]) -> dict[str, Any]:
    """``content[key]``, a JSON object with one entry per finding."""
    value = content[key]
    if not isinstance(value, dict):
        raise TypeError(f"{key!r} is {type(value).__name__}, not an object")
    missing = [f for f in findings if f not in value]
    if missing:
        raise ValueError(f"{key!r} has no entry for {first_items(missing)}")
    return value
