"""The evaluation folder: its file names, its typed `Summary` (``metrics.json``), and its one reader and writer.

An evaluation folder is self-describing; the dashboard, `evaluation.compare` and `training.runs` read nothing else:

- ``predictions.csv``: ``Image`` and the 14 probabilities;
- ``labels.csv``: the labels scored against, in the course format (``Image``, the 14 findings, ``PatientId``);
- ``metrics.json``: per finding the AUC with its bootstrap 95% interval, average precision, prevalence, the
  operating threshold and sensitivity, specificity, PPV, NPV, F1 and confusion counts there, Brier score and
  calibration; the macro mean AUC with its interval; where the predictions, labels and thresholds came from
  (a checkpoint with its SHA-256, which `pipeline.evaluation.provenance` matches before the thresholds are used);
- ``roc.csv``, ``pr.csv``, ``calibration.csv``: the curves, so that plots need no recomputation;
- with ``evaluate --plots``, ``curves.html``: the figures of `pipeline.plots` on one self-contained page;
- where ages, sexes and views are known, the subgroup audit (`pipeline.evaluation.subgroups`): ``subgroups.json``
  (`SubgroupAudit`, `read_subgroups`), ``subgroups.csv`` (one row per subgroup, finding and measure) and
  ``subgroup_metadata.csv`` (the Image, Sex, Age, View it used); with ``--plots`` its two forest plots.
- with ``evaluate --miss-rate``, ``conformal.json`` (`Conformal`: per-finding and image-level conformal thresholds,
  what they were calibrated on, the rates realised on this folder's images) and ``risk_coverage.csv``.

Each file is written through a temporary file and a rename, and ``metrics.json`` last, so a folder with a
``metrics.json`` is complete. `Summary.to_json` writes the keys in the order earlier versions wrote them, so
``metrics.json`` stays byte for byte what it was. Imports no TensorFlow.

About 700 lines, kept whole on purpose: every file format of an evaluation folder (and the predictions CSV and
thresholds JSON users hand to ``evaluate``, which share them) is defined, read and written here and nowhere else.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.core.errors import InputError, first_items, reason
from pipeline.core.files import output_folder, staged_folder, write_csv_atomic, write_json_atomic, write_text_atomic
from pipeline.core.findings import FINDINGS
from pipeline.data import label_files
from pipeline.evaluation.metrics import Reliability  # the one reliability-curve type, stored here per finding

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
    checkpoint_sha256: str | None = None  # the weights scored: what binds thresholds to a checkpoint (provenance)
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
                **({"checkpoint_sha256": self.checkpoint_sha256} if self.checkpoint_sha256 else {}),
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
                checkpoint_sha256=content.get("checkpoint_sha256"),
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
    conformal: Conformal | None = None  # with `evaluate --miss-rate`: conformal.json
    risk_coverage: pd.DataFrame | None = None  # and risk_coverage.csv


@dataclass
class SavedEvaluation:
    """An evaluation folder read for display: its summary and curves (`read_evaluation`)."""

    folder: Path
    summary: Summary
    roc: pd.DataFrame
    pr: pd.DataFrame
    calibration: pd.DataFrame


# --- writing ---------------------------------------------------------------------------------------------------


def write_evaluation(
    evaluation: Evaluation, out_dir: str | Path, extra: Callable[[Path], Any] | None = None
) -> Path:
    """Write an evaluation folder (see the module docstring), whole or not at all; returns its metrics.json.

    Everything is written into a temporary folder beside ``out_dir`` first (`pipeline.core.files.staged_folder`),
    so a full disk leaves ``out_dir`` as it was and ends in one `InputError`. ``extra(folder)`` writes the
    optional files (subgroups, conformal) into the same temporary folder; an earlier evaluation's optional
    files that this one does not write are removed, so they never outlive it.
    """
    owned = (*SUBGROUP_FILES, CONFORMAL_JSON, RISK_COVERAGE_CSV)
    with staged_folder(out_dir, last=METRICS_JSON, replaces=owned) as out:
        write_csv_atomic(evaluation.predictions, out / PREDICTIONS_CSV)
        write_csv_atomic(label_files.to_course_format(evaluation.labels), out / LABELS_CSV)
        write_csv_atomic(evaluation.roc, out / ROC_CSV)
        write_csv_atomic(evaluation.pr, out / PR_CSV)
        write_csv_atomic(evaluation.calibration, out / CALIBRATION_CSV)
        if extra is not None:
            extra(out)
        write_json_atomic(evaluation.summary.to_json(), out / METRICS_JSON)
    return Path(out_dir) / METRICS_JSON


# --- reading ---------------------------------------------------------------------------------------------------


def read_metrics(eval_dir: str | Path) -> Summary:
    """An evaluation folder's ``metrics.json`` as a `Summary` (`InputError` when missing or not one)."""
    folder = Path(eval_dir)
    path = folder / METRICS_JSON
    if not path.is_file():
        raise InputError(f"{folder}: not an evaluation folder (no {METRICS_JSON}); run `python -m pipeline evaluate`")
    return Summary.from_json(_read_json(path), str(path))


def read_evaluation(eval_dir: str | Path) -> SavedEvaluation:
    """An evaluation folder's summary and its ROC, PR and calibration curves, for display."""
    folder = Path(eval_dir)
    summary = read_metrics(folder)
    frames = {}
    for name in (ROC_CSV, PR_CSV, CALIBRATION_CSV):
        path = folder / name
        if not path.is_file():
            raise InputError(f"{folder}: {name} is missing; {RERUN}")
        frames[name] = _read_csv(path)
    return SavedEvaluation(folder, summary, frames[ROC_CSV], frames[PR_CSV], frames[CALIBRATION_CSV])


def _read_json(path: Path) -> Any:
    """A file of the evaluation folder parsed as JSON; `InputError` naming it when it cannot be."""
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable ({reason(exc)}); {RERUN}") from None


def _read_csv(path: Path, **options: Any) -> pd.DataFrame:
    """A CSV file of the evaluation folder; `InputError` naming it when it cannot be read."""
    try:
        return pd.read_csv(path, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as exc:
        raise InputError(f"{path}: cannot be read as CSV ({reason(exc)}); {RERUN}") from None


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


# --- subgroups (issue 18): subgroups.json, subgroups.csv, subgroup_metadata.csv ---------------------------------

SUBGROUPS_JSON = "subgroups.json"
SUBGROUPS_CSV = "subgroups.csv"
SUBGROUP_METADATA_CSV = "subgroup_metadata.csv"
SUBGROUP_FILES = (SUBGROUPS_JSON, SUBGROUPS_CSV, SUBGROUP_METADATA_CSV)
SUBGROUP_MEASURES = ("auc", "sensitivity", "fpr", "underdiagnosis", "overdiagnosis")
# The small-group rule: the fewest positives (or negatives) a number may rest on; fewer: "too few", no number
# (the subgroup audit's default, and where the risk-coverage figure stops drawing a solid miss rate).
MIN_COUNT = 10


@dataclass
class Rate:
    """One subgroup number with its bootstrap 95% interval, and its gap to the rest with the gap's own interval.

    ``value`` is None when ``too_few`` says why (the small-group rule) or when the data cannot define it;
    ``count`` is its denominator in the subgroup (positives for a sensitivity, negatives for a false-positive
    rate); ``gap = value - value of the rest`` (None for an AUC).
    """

    value: float | None
    ci: list[float] | None
    count: int
    gap: float | None = None
    gap_ci: list[float] | None = None
    too_few: str | None = None


@dataclass
class SubgroupFinding:
    """One finding in one subgroup: counts, AUC, and sensitivity and false-positive rate at the threshold."""

    n_positive: int
    n_negative: int
    auc: Rate
    sensitivity: Rate
    fpr: Rate


@dataclass
class Subgroup:
    """One subgroup (``attribute`` "sex", "age", "view" or "sex x age"; ``name`` e.g. "female 60-80")."""

    attribute: str
    name: str
    n_images: int
    n_abnormal: int  # images with at least one finding
    n_normal: int
    findings: dict[str, SubgroupFinding]
    underdiagnosis: Rate  # of the abnormal images, the share the model calls normal
    overdiagnosis: Rate  # of the normal images, the share the model calls abnormal


@dataclass
class SubgroupAudit:
    """``subgroups.json`` in memory: the subgroup and underdiagnosis audit of one evaluation.

    ``left_out`` names, per reason (``no_metadata``, ``age_over_100``, ``no_age``, ``no_sex``, ``no_view``),
    the images left out of the subgroups that reason concerns; they stay in the evaluation and in the others.
    """

    n_images: int
    attributes: list[str]
    age_edges: list[int]
    min_count: int
    normal_rule: str
    rest_rule: str
    n_resamples: int
    seed: int
    metadata: str
    left_out: dict[str, list[str]]
    groups: list[Subgroup]
    notes: list[str]

    def to_json(self) -> dict[str, Any]:
        """The subgroups.json object."""
        return asdict(self)

    @classmethod
    def from_json(cls, content: Any, source: str = SUBGROUPS_JSON) -> SubgroupAudit:
        """A `SubgroupAudit` from a parsed subgroups.json; `InputError` naming ``source`` when it is not one."""
        if not isinstance(content, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(content).__name__}; {RERUN}")
        try:
            groups = [
                Subgroup(
                    **{k: v for k, v in group.items() if k not in ("findings", "underdiagnosis", "overdiagnosis")},
                    findings={
                        finding: SubgroupFinding(
                            n_positive=cell["n_positive"], n_negative=cell["n_negative"],
                            **{m: Rate(**cell[m]) for m in ("auc", "sensitivity", "fpr")},
                        )
                        for finding, cell in group["findings"].items()
                    },
                    underdiagnosis=Rate(**group["underdiagnosis"]),
                    overdiagnosis=Rate(**group["overdiagnosis"]),
                )
                for group in content["groups"]
            ]
            return cls(**{**content, "groups": groups})
        except KeyError as exc:
            raise InputError(f"{source}: no {exc.args[0]!r} entry; {RERUN}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{source}: not a subgroups.json of this toolkit ({reason(exc)}); {RERUN}") from None

    def group(self, attribute: str, name: str) -> Subgroup:
        """The subgroup ``name`` of ``attribute`` (`KeyError` when there is none)."""
        for group in self.groups:
            if group.attribute == attribute and group.name == name:
                return group
        raise KeyError(f"{attribute} {name}")


def subgroup_frame(audit: SubgroupAudit) -> pd.DataFrame:
    """subgroups.csv: one row per subgroup, finding and measure, every number beside its interval and count.

    The underdiagnosis and overdiagnosis rows have finding ``any``; an empty value has ``too_few`` saying why.
    """
    rows = []
    for group in audit.groups:
        cells: list[tuple[str, str, Rate]] = [
            (finding, measure, getattr(cell, measure))
            for finding, cell in group.findings.items()
            for measure in ("auc", "sensitivity", "fpr")
        ]
        cells += [("any", "underdiagnosis", group.underdiagnosis), ("any", "overdiagnosis", group.overdiagnosis)]
        for finding, measure, rate in cells:
            ci, gap_ci = rate.ci or [None, None], rate.gap_ci or [None, None]
            rows.append({
                "attribute": group.attribute, "group": group.name, "n_images": group.n_images,
                "finding": finding, "measure": measure, "value": rate.value, "ci_low": ci[0], "ci_high": ci[1],
                "gap": rate.gap, "gap_ci_low": gap_ci[0], "gap_ci_high": gap_ci[1], "count": rate.count,
                "too_few": rate.too_few or "",
            })
    return pd.DataFrame(rows)


def write_subgroups(audit: SubgroupAudit | None, metadata: pd.DataFrame | None, out_dir: str | Path) -> None:
    """Write (or, for None, remove stale) subgroups.json, subgroups.csv and subgroup_metadata.csv."""
    out = output_folder(out_dir)
    if audit is None:
        for name in SUBGROUP_FILES:
            (out / name).unlink(missing_ok=True)
        return
    (out / SUBGROUPS_JSON).unlink(missing_ok=True)  # written last: with it, the other two are complete
    if metadata is not None:
        write_csv_atomic(metadata, out / SUBGROUP_METADATA_CSV)
    write_csv_atomic(subgroup_frame(audit), out / SUBGROUPS_CSV)
    # compact: indented, the 836 numbers of a default audit with their intervals and counts take 230 kB
    write_text_atomic(json.dumps(audit.to_json(), allow_nan=False, separators=(",", ":")) + "\n", out / SUBGROUPS_JSON)


def read_subgroups(eval_dir: str | Path) -> SubgroupAudit | None:
    """An evaluation folder's subgroups.json, or None when it has none (evaluated without metadata or earlier)."""
    path = Path(eval_dir) / SUBGROUPS_JSON
    return SubgroupAudit.from_json(_read_json(path), str(path)) if path.is_file() else None


def read_subgroup_metadata(eval_dir: str | Path) -> pd.DataFrame | None:
    """The Image, Sex, Age, View table an audit used (subgroup_metadata.csv), or None when absent."""
    path = Path(eval_dir) / SUBGROUP_METADATA_CSV
    return _read_csv(path, dtype={"Image": str, "Sex": str, "View": str}) if path.is_file() else None


# --- conformal guarantees (conformal.json, risk_coverage.csv; computed by pipeline.evaluation.conformal) -----------

CONFORMAL_JSON = "conformal.json"
RISK_COVERAGE_CSV = "risk_coverage.csv"
RISK_COVERAGE_COLUMNS = ["coverage", "n_kept", "miss_rate", "positives", "missed", "miss_low", "miss_high", "set_miss",
                         "mean_auc"]
RISK_COVERAGE_INTERVAL = ["positives", "missed", "miss_low", "miss_high"]  # absent from files written before them


@dataclass
class Realised:
    """A rate seen on held-out images: ``count`` of ``n`` with its Clopper-Pearson 95% interval (None when n = 0)."""

    n: int
    count: int
    rate: float | None
    ci: list[float] | None


@dataclass
class FindingGuarantee:
    """One finding's conformal thresholds, calibrated on validation positives (miss) and negatives (false alarm).

    A score below ``miss_threshold`` is *ruled out*, above ``false_alarm_threshold`` *flagged*. A threshold is None
    where the validation set has too few images of that class for the rate asked; ``notes`` then say so.
    ``*_bound`` is the rate the finite-sample rule guarantees, k / (n + 1), at most the rate asked.
    """

    n_positive: int
    n_negative: int
    miss_threshold: float | None
    miss_bound: float | None
    false_alarm_threshold: float | None
    false_alarm_bound: float | None
    notes: list[str]
    test_misses: Realised | None = None  # positives of the test set scored below miss_threshold
    test_false_alarms: Realised | None = None  # negatives of the test set scored above false_alarm_threshold


@dataclass
class ImageGuarantee:
    """Conformal risk control of the image-level set {findings not ruled out} = {findings scoring >= threshold}.

    Calibrated on the ``n_images`` validation images with at least one finding; bounds the expected share of such
    an image's true findings left out of its set by the miss rate asked. None with a note when there are too few.
    """

    n_images: int
    threshold: float | None
    note: str | None
    test_n_images: int | None = None
    test_missed_share: float | None = None  # mean share of each test image's true findings left out of its set
    test_missed_share_ci: list[float] | None = None  # bootstrap percentile 95% interval over images
    test_mean_set_size: float | None = None


@dataclass
class Conformal:
    """``conformal.json`` in memory: the guarantees of an evaluation and the data they were calibrated on."""

    miss_rate: float
    false_alarm_rate: float
    calibration: str  # the validation evaluation or label file the thresholds were chosen on
    calibration_images: int
    findings: dict[str, FindingGuarantee]
    image: ImageGuarantee
    abstention: str  # how the risk-coverage curve orders images, in words
    calibration_sha256: str | None = None
    test: str | None = None  # the labels the realised rates were measured on

    def to_json(self) -> dict[str, Any]:
        """The conformal.json object."""
        return asdict(self)

    @classmethod
    def from_json(cls, content: Any, source: str = CONFORMAL_JSON) -> Conformal:
        """A `Conformal` from a parsed conformal.json; `InputError` naming ``source`` when it is not one."""
        if not isinstance(content, dict):
            raise InputError(f"{source}: expected a JSON object, got {type(content).__name__}; {RERUN}")
        try:
            findings = {}
            for name, entry in content["findings"].items():
                entry = dict(entry)
                for key in ("test_misses", "test_false_alarms"):
                    entry[key] = Realised(**entry[key]) if entry.get(key) is not None else None
                findings[str(name)] = FindingGuarantee(**entry)
            missing = [f for f in FINDINGS if f not in findings]
            if missing:
                raise ValueError(f"no entry for {first_items(missing)}")
            return cls(**{**content, "findings": findings, "image": ImageGuarantee(**content["image"])})
        except KeyError as exc:
            raise InputError(f"{source}: no {exc.args[0]!r} entry; {RERUN}") from None
        except (TypeError, ValueError, AttributeError) as exc:
            raise InputError(f"{source}: not a conformal.json of this toolkit ({reason(exc)}); {RERUN}") from None


def write_conformal(conformal: Conformal, risk_coverage: pd.DataFrame | None, out_dir: str | Path) -> Path:
    """Write conformal.json (and risk_coverage.csv when given) into an evaluation folder; returns conformal.json."""
    out = output_folder(out_dir)
    if risk_coverage is not None:
        write_csv_atomic(risk_coverage[RISK_COVERAGE_COLUMNS], out / RISK_COVERAGE_CSV)
    write_json_atomic(conformal.to_json(), out / CONFORMAL_JSON)
    return out / CONFORMAL_JSON


def read_conformal(eval_dir: str | Path) -> Conformal | None:
    """An evaluation folder's conformal guarantees, or None when it has none (evaluated without ``--miss-rate``)."""
    path = Path(eval_dir) / CONFORMAL_JSON
    return Conformal.from_json(_read_json(path), str(path)) if path.is_file() else None


def read_risk_coverage(eval_dir: str | Path) -> pd.DataFrame | None:
    """An evaluation folder's risk-coverage curve, or None when it has none.

    A file written before the miss rate had its counts and interval reads with those columns NaN.
    """
    path = Path(eval_dir) / RISK_COVERAGE_CSV
    if not path.is_file():
        return None
    frame = _read_csv(path)
    missing = [c for c in RISK_COVERAGE_COLUMNS if c not in frame.columns and c not in RISK_COVERAGE_INTERVAL]
    if missing:
        raise InputError(f"{path}: no column {first_items(missing)}; {RERUN}")
    for column in RISK_COVERAGE_INTERVAL:  # an older file: no counts and no interval, NaN (the figure draws none)
        if column not in frame.columns:
            frame[column] = np.nan
    return frame[RISK_COVERAGE_COLUMNS]
