"""Who does the model fail? The subgroup and underdiagnosis audit of one evaluation: plain NumPy, no TensorFlow.

For sex, age group, view position (PA or AP) and sex x age, per finding: the AUC with its bootstrap 95% interval,
and at the evaluation's operating thresholds the sensitivity and false-positive rate with intervals and each
subgroup's gap to the rest (the gap's own bootstrap: group and rest measured on the same resamples, then
subtracted). Per subgroup, underdiagnosis (abnormal images the model calls normal, `model_says_normal`) and its
opposite (normal images called abnormal). A number resting on fewer than ``min_count`` positives (or negatives)
is not given: the cell says "too few" instead.

Ages, sexes and views come from the label file when it has them (the NIH ``Data_Entry`` file), else from the
shipped NIH metadata joined by image name (`attach_metadata`). What cannot be placed is never dropped silently:
images without metadata, ages over 100 (a known NIH data-entry error), missing sex or view are counted and named
in the notes and in ``SubgroupAudit.left_out``; they stay in the evaluation and in the other attributes' groups.

Why not fairlearn's ``MetricFrame``: it disaggregates any metric by group and (since 0.10) bootstraps it, but
calls the metric once per group and resample in Python, gives no gap to the *rest* with its own interval, and
would add fairlearn and scikit-learn to the runtime dependencies. Here one ``bincount`` per resample chunk,
attribute and finding counts every group's confusion cells, on the very resamples of `metrics.resample_indices`
that the evaluation's AUC intervals use, and `metrics.grouped_bootstrap_auc` does the same for the AUCs.

About 460 lines, kept whole: the grouping, the counting on shared resamples, the rates, the comparison of two
models' gaps and the table for pages all rest on one layout of confusion cells; split, each part would restate it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.core import paths
from pipeline.core.errors import InputError, first_items
from pipeline.core.findings import FINDINGS
from pipeline.evaluation import metrics
from pipeline.evaluation.results import MIN_COUNT, Evaluation, Rate, Subgroup, SubgroupAudit, SubgroupFinding

DEFAULT_AGE_EDGES = (20, 40, 60, 80)
DEFAULT_MIN_COUNT = MIN_COUNT
MAX_AGE = 100  # older recorded ages are NIH data-entry errors
SMALL_EVALUATION = 1000  # fewer images: the page and notes say the numbers illustrate, not conclude
ATTRIBUTES = ("sex", "age", "view", "sex x age")
SEXES = {"F": "female", "M": "male"}
VIEWS = ("PA", "AP")
NORMAL_RULE = (
    "the model calls an image normal when none of the 14 probabilities reaches its finding's operating threshold"
)
REST_RULE = "a subgroup's gap = its value - the value of the other images with a known value of the same attribute"
REST_TOO_FEW = "too few in the rest (< {})"  # a gap whose rest has fewer than min_count positives (or negatives)
METADATA_COLUMNS = {"Image Index": "Image", "Patient Gender": "Sex", "Patient Age": "Age", "View Position": "View"}
_TN, _FP, _FN, _TP = range(4)


def model_says_normal(scores: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
    """The one rule for "the model says normal": no finding's probability at or above its threshold.

    ``scores`` is (n_images, 14) in `FINDINGS` order, ``thresholds`` the 14 operating thresholds.
    """
    return ~(np.asarray(scores) >= np.asarray(thresholds, dtype=np.float64)[None, :]).any(axis=1)


def attach_metadata(labels: pd.DataFrame, metadata_file: str | Path | None = None) -> tuple[pd.DataFrame, str]:
    """``Image``, ``Sex`` ("F", "M" or empty), ``Age`` (years or NaN), ``View`` ("PA", "AP" or empty) per image.

    A label table with its own ``Sex``, ``Age`` and ``View`` (the NIH Data_Entry file) keeps them; any other is
    joined by image name to ``metadata_file`` (default: the shipped NIH metadata). Images it lacks get empty
    values (`audit` counts and names them). Returns the table, in the labels' order, and where it came from.
    """
    if all(column in labels.columns for column in ("Sex", "Age", "View")):
        table, source = labels[["Image", "Sex", "Age", "View"]].copy(), "the label file's own age, sex and view"
    else:
        path = Path(metadata_file) if metadata_file is not None else paths.metadata_file()
        if not path.is_file():
            raise InputError(
                f"{path}: NIH metadata not found; the subgroup audit joins it to label files without age, sex and "
                "view (reinstall the package, which ships it in pipeline/metadata/, or leave the audit out)"
            )
        meta = pd.read_csv(path, usecols=list(METADATA_COLUMNS), dtype={"Image Index": str}).rename(
            columns=METADATA_COLUMNS)
        table = labels[["Image"]].merge(meta.drop_duplicates("Image"), on="Image", how="left")
        source = f"{path.name}, joined by image name"
    sex = table["Sex"].astype("string").str.strip().str.upper()
    view = table["View"].astype("string").str.strip().str.upper()
    return pd.DataFrame({
        "Image": table["Image"].astype(str).to_numpy(),
        "Sex": sex.where(sex.isin(list(SEXES))).to_numpy(dtype=object),
        "Age": pd.to_numeric(table["Age"], errors="coerce").to_numpy(dtype=np.float64),
        "View": view.where(view.isin(list(VIEWS))).to_numpy(dtype=object),
    }), source


@dataclass
class Attribute:
    """One way of splitting the images: its group names and each image's group (-1: in none)."""

    name: str
    groups: list[str]
    member: np.ndarray


def age_group_names(age_edges: Sequence[int]) -> list[str]:
    """``0-20``, ``20-40``, ..., ``80+``: lower bound included (a 20-year-old is in 20-40)."""
    lows = (0, *age_edges)
    return [f"{low}-{high}" for low, high in zip(lows, age_edges, strict=False)] + [f"{age_edges[-1]}+"]


def check_age_edges(age_edges: Sequence[int]) -> list[int]:
    """The age group boundaries as a list; `InputError` unless increasing whole years between 0 and 100."""
    edges = [int(edge) for edge in age_edges]
    if not edges or edges != sorted(set(edges)) or edges[0] <= 0 or edges[-1] >= MAX_AGE or edges != list(age_edges):
        raise InputError(
            f"`age_edges` {list(age_edges)}: give increasing whole years between 0 and {MAX_AGE}, e.g. 20,40,60,80"
        )
    return edges


def group_images(meta: pd.DataFrame, age_edges: Sequence[int]) -> tuple[list[Attribute], dict[str, list[str]]]:
    """The four attributes' groups of each image of ``meta`` (`attach_metadata`), and the images left out, by why."""
    edges = check_age_edges(age_edges)
    images = meta["Image"].to_numpy()
    sex = np.select([meta["Sex"] == code for code in SEXES], list(range(len(SEXES))), -1)
    age = meta["Age"].to_numpy(dtype=np.float64)
    known_age = np.isfinite(age) & (age >= 0) & (age <= MAX_AGE)
    age_group = np.where(known_age, np.searchsorted(edges, np.where(known_age, age, 0), side="right"), -1)
    view = np.select([meta["View"] == code for code in VIEWS], list(range(len(VIEWS))), -1)
    n_ages = len(edges) + 1
    ages = age_group_names(edges)
    no_metadata = meta[["Sex", "Age", "View"]].isna().all(axis=1).to_numpy()
    left_out = {
        "no_metadata": images[no_metadata].tolist(),
        "age_over_100": images[np.isfinite(age) & (age > MAX_AGE)].tolist(),
        "no_age": images[~no_metadata & ~(np.isfinite(age) & (age >= 0))].tolist(),  # missing or negative
        "no_sex": images[~no_metadata & (sex < 0)].tolist(),
        "no_view": images[~no_metadata & (view < 0)].tolist(),
    }
    attributes = [
        Attribute("sex", list(SEXES.values()), sex),
        Attribute("age", ages, age_group),
        Attribute("view", list(VIEWS), view),
        Attribute("sex x age", [f"{s} {a}" for s in SEXES.values() for a in ages],
                  np.where((sex >= 0) & (age_group >= 0), sex * n_ages + age_group, -1)),
    ]
    return attributes, left_out


def confusion_cells(member: np.ndarray, n_groups: int, truth: np.ndarray, called: np.ndarray,
                    resampled: np.ndarray) -> np.ndarray:
    """(rows, n_groups, 4) counts of true negatives, false positives, false negatives, true positives per group,
    on each resample (rows of image indices); images in no group (-1) are not counted."""
    width = 4 * n_groups + 1
    code = np.where(member >= 0, 4 * member + 2 * truth.astype(np.intp) + called.astype(np.intp), width - 1)
    rows = len(resampled)
    flat = (code[resampled] + (width * np.arange(rows))[:, None]).ravel()
    counts = np.bincount(flat, minlength=rows * width).reshape(rows, width)
    return counts[:, :-1].reshape(rows, n_groups, 4)


def truth_and_calls(labels: pd.DataFrame, predictions: pd.DataFrame,
                    thresholds: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """(n, 15) labels and calls: the 14 findings at their thresholds, then "abnormal" (any finding)."""
    y = labels[list(FINDINGS)].to_numpy(dtype=bool)
    p = predictions[list(FINDINGS)].to_numpy(dtype=np.float64)
    limits = [float(thresholds[f]) for f in FINDINGS]
    called = p >= np.asarray(limits)[None, :]
    return np.c_[y, y.any(axis=1)], np.c_[called, ~model_says_normal(p, limits)]


def count_cells(attributes: list[Attribute], truth: np.ndarray, called: np.ndarray, n_bootstrap: int,
                seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per attribute, the confusion cells of the data, (groups, 15, 4), and of each resample, (B, groups, 15, 4)."""
    n, columns = truth.shape
    point = [np.stack([confusion_cells(a.member, len(a.groups), truth[:, j], called[:, j], np.arange(n)[None])[0]
                       for j in range(columns)], axis=1) for a in attributes]
    boot = [np.zeros((n_bootstrap, len(a.groups), columns, 4), dtype=np.int64) for a in attributes]
    start = 0
    for resampled in metrics.resample_indices(n, n_bootstrap, seed):
        rows = len(resampled)
        for a, attribute in enumerate(attributes):
            for j in range(columns):
                boot[a][start:start + rows, :, j] = confusion_cells(
                    attribute.member, len(attribute.groups), truth[:, j], called[:, j], resampled)
        start += rows
    return point, boot


def rates(cells: np.ndarray) -> dict[str, np.ndarray]:
    """Sensitivity and false-positive rate of each group and of its rest from (..., groups, 15, 4) cells."""
    rest = cells.sum(axis=-3, keepdims=True) - cells

    def ratio(c: np.ndarray, top: int, other: int) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            return c[..., top] / (c[..., top] + c[..., other])

    return {"sensitivity": ratio(cells, _TP, _FN), "fpr": ratio(cells, _FP, _TN),
            "rest_sensitivity": ratio(rest, _TP, _FN), "rest_fpr": ratio(rest, _FP, _TN),
            "positives": cells[..., _TP] + cells[..., _FN], "negatives": cells[..., _FP] + cells[..., _TN],
            "rest_positives": rest[..., _TP] + rest[..., _FN], "rest_negatives": rest[..., _FP] + rest[..., _TN]}


def audit(labels: pd.DataFrame, predictions: pd.DataFrame, thresholds: Mapping[str, float], meta: pd.DataFrame, *,
          metadata: str = "", age_edges: Sequence[int] = DEFAULT_AGE_EDGES, min_count: int = DEFAULT_MIN_COUNT,
          n_bootstrap: int = 1000, seed: int = 0, data: str = "") -> SubgroupAudit:
    """The subgroup and underdiagnosis audit of predictions against labels (both in the same image order).

    Parameters
    ----------
    labels, predictions, thresholds
        The canonical label table, the aligned probabilities and the 14 operating thresholds of an evaluation.
    meta, metadata
        `attach_metadata`'s table for the same images, and where it came from (in words, for the report).
    age_edges, min_count
        Age group boundaries; the fewest positives (or negatives) a number may rest on, in the group and, for a
        gap, in the rest.
    n_bootstrap, seed
        Resamples of the images (0: no intervals) and their seed, as for the evaluation's AUC intervals.
    data
        The labels evaluated (e.g. their file), named in the first note: which data the numbers describe.
    """
    if min_count < 1:
        raise InputError(f"min_count {min_count}: give 1 or more (the fewest positives a number may rest on)")
    if list(meta["Image"]) != list(labels["Image"]):
        raise ValueError("meta must list the labels' images in the same order")
    attributes, left_out = group_images(meta, age_edges)
    truth, called = truth_and_calls(labels, predictions, thresholds)
    point, boot = count_cells(attributes, truth, called, n_bootstrap, seed)
    y = labels[list(FINDINGS)].to_numpy(dtype=np.int8)
    p = predictions[list(FINDINGS)].to_numpy(dtype=np.float64)
    groups = []
    for a, attribute in enumerate(attributes):
        aucs = _bootstrap_aucs(attribute, y, p, n_bootstrap, seed)
        now, resampled = rates(point[a]), rates(boot[a])
        for g, name in enumerate(attribute.groups):
            member = attribute.member == g
            cell = point[a][g]
            findings = {}
            for j, finding in enumerate(FINDINGS):
                rate = _Cell(now, resampled, g, j, min_count)
                n_pos, n_neg = int(cell[j, _TP] + cell[j, _FN]), int(cell[j, _FP] + cell[j, _TN])
                findings[finding] = SubgroupFinding(
                    n_positive=n_pos, n_negative=n_neg,
                    auc=_auc(y[member, j], p[member, j], aucs[:, g, j], n_pos, n_neg, min_count),
                    sensitivity=rate.get("sensitivity", "positives"), fpr=rate.get("fpr", "negatives"))
            rate = _Cell(now, resampled, g, len(FINDINGS), min_count)
            sensitivity = rate.get("sensitivity", "positives", "abnormal images")
            groups.append(Subgroup(
                attribute=attribute.name, name=name, n_images=int(member.sum()),
                n_abnormal=int(cell[-1, _TP] + cell[-1, _FN]), n_normal=int(cell[-1, _FP] + cell[-1, _TN]),
                findings=findings, underdiagnosis=_complement(sensitivity),
                overdiagnosis=rate.get("fpr", "negatives", "normal images")))
    result = SubgroupAudit(
        n_images=len(labels), attributes=list(ATTRIBUTES), age_edges=check_age_edges(age_edges),
        min_count=min_count, normal_rule=NORMAL_RULE, rest_rule=REST_RULE, n_resamples=n_bootstrap, seed=seed,
        metadata=metadata, left_out=left_out, groups=groups, notes=[])
    result.notes = audit_notes(result, data)
    return result


def audit_evaluation(evaluation: Evaluation, *, metadata_file: str | Path | None = None,
                     age_edges: Sequence[int] = DEFAULT_AGE_EDGES, min_count: int = DEFAULT_MIN_COUNT,
                     n_bootstrap: int = 1000, seed: int = 0) -> tuple[SubgroupAudit | None, pd.DataFrame | None, str]:
    """The audit of an evaluation at its thresholds, for `pipeline.evaluation.evaluate.evaluate_files`.

    Returns
    -------
    audit, metadata, note
        The audit and the Image, Sex, Age, View table it used; or (None, None, why) when no metadata file is
        there or none of the images is in it: then ``note`` says the audit was left out and why.
    """
    check_age_edges(age_edges)
    labels = evaluation.labels
    try:
        meta, source = attach_metadata(labels, metadata_file)
    except InputError as exc:
        return None, None, f"no subgroup audit: {exc}"
    if meta[["Sex", "Age", "View"]].isna().all(axis=None):
        return None, None, (f"no subgroup audit: none of the {len(labels)} images has an age, sex or view in "
                            f"{source.split(',')[0]} (e.g. {labels['Image'].iloc[0]})")
    result = audit(labels, evaluation.predictions, evaluation.summary.thresholds, meta, metadata=source,
                   age_edges=age_edges, min_count=min_count, n_bootstrap=n_bootstrap, seed=seed,
                   data=evaluation.summary.labels_file or "")
    return result, meta, f"subgroup audit of {len(labels)} images by sex, age, view and sex x age (ages, sexes " \
                         f"and views from {source})"


def audit_notes(result: SubgroupAudit, data: str = "") -> list[str]:
    """The honesty lines of an audit: which and how many images, which were left out of what and why, the "too few"
    cells."""
    n = result.n_images
    notes = [f"measured on {n} images{f' of {data}' if data else ''} at the evaluation's operating thresholds"]
    if n < SMALL_EVALUATION:
        notes.append(f"only {n} images: far too few for conclusions about subgroups; the numbers and intervals here "
                     "illustrate the audit, they do not describe the model")
    why = {
        "no_metadata": "have no entry in the NIH metadata and are in no subgroup",
        "age_over_100": f"have a recorded age over {MAX_AGE} (a known NIH data-entry error) and are left out of the "
                        "age groups",
        "no_age": "have no age (or a negative one) and are left out of the age groups",
        "no_sex": "have no sex recorded (F or M) and are left out of the sex groups",
        "no_view": "have no view position (PA or AP) and are left out of the view groups",
    }
    for key, images in result.left_out.items():
        if images:
            notes.append(f"{len(images)} of {n} images {why[key]}: {first_items(images)}")
    rates_given = [r for g in result.groups for r in _all_rates(g)]
    too_few = sum(r.too_few is not None for r in rates_given)
    if too_few:
        notes.append(f"{too_few} of {len(rates_given)} numbers are 'too few': they rest on fewer than "
                     f"{result.min_count} positives or negatives")
    return notes


def _all_rates(group: Subgroup) -> list[Rate]:
    cells = [r for c in group.findings.values() for r in (c.auc, c.sensitivity, c.fpr)]
    return [*cells, group.underdiagnosis, group.overdiagnosis]


class _Cell:
    """The rates of one group and one column (finding or "abnormal") from `rates` of the data and the resamples."""

    def __init__(self, now: dict[str, np.ndarray], resampled: dict[str, np.ndarray], g: int, j: int,
                 min_count: int) -> None:
        self.now, self.resampled, self.g, self.j, self.min_count = now, resampled, g, j, min_count

    def get(self, measure: str, denominator: str, label: str | None = None) -> Rate:
        count = int(self.now[denominator][self.g, self.j])
        rest = int(self.now[f"rest_{denominator}"][self.g, self.j])
        if count < self.min_count:
            return Rate(None, None, count, too_few=f"too few: {count} {label or denominator} (< {self.min_count})")
        value = _finite(self.now[measure][self.g, self.j])
        samples = self.resampled[measure][:, self.g, self.j]
        gap_samples = samples - self.resampled[f"rest_{measure}"][:, self.g, self.j]
        gap = None
        if rest >= self.min_count and value is not None:
            gap = _finite(value - self.now[f"rest_{measure}"][self.g, self.j])
        return Rate(value, _interval(samples), count, gap, _interval(gap_samples) if gap is not None else None)


def _complement(rate: Rate) -> Rate:
    """1 - a rate (underdiagnosis from the sensitivity of "abnormal"): intervals flipped, gaps negated."""
    def flip(ci: list[float] | None, base: float) -> list[float] | None:
        return None if ci is None else [base - ci[1], base - ci[0]]

    return Rate(None if rate.value is None else 1 - rate.value, flip(rate.ci, 1.0), rate.count,
                None if rate.gap is None else 0.0 - rate.gap, flip(rate.gap_ci, 0.0), rate.too_few)


def _auc(y: np.ndarray, p: np.ndarray, samples: np.ndarray, n_pos: int, n_neg: int, min_count: int) -> Rate:
    if n_pos < min_count or n_neg < min_count:
        return Rate(None, None, n_pos,
                    too_few=f"too few: {n_pos} positives, {n_neg} negatives (each needs >= {min_count})")
    return Rate(metrics.roc_auc(y, p), _interval(samples), n_pos)


def _bootstrap_aucs(attribute: Attribute, y: np.ndarray, p: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """(B, groups, 14) AUCs of each group on the evaluation's resamples."""
    aucs = np.full((n_bootstrap, len(attribute.groups), len(FINDINGS)), np.nan)
    start = 0
    for resampled in metrics.resample_indices(len(y), n_bootstrap, seed):
        for j in range(len(FINDINGS)):
            aucs[start:start + len(resampled), :, j] = metrics.grouped_bootstrap_auc(
                y[:, j], p[:, j], attribute.member, len(attribute.groups), resampled)
        start += len(resampled)
    return aucs


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


def _interval(samples: np.ndarray) -> list[float] | None:
    bounds = metrics.percentile_interval(samples) if len(samples) else None
    return None if bounds is None else list(bounds)


def gap_differences(labels: pd.DataFrame, meta: pd.DataFrame, reference: tuple[pd.DataFrame, Mapping[str, float]],
                    other: tuple[pd.DataFrame, Mapping[str, float]], *, age_edges: Sequence[int] = DEFAULT_AGE_EDGES,
                    min_count: int = DEFAULT_MIN_COUNT, n_bootstrap: int = 1000, seed: int = 0) -> list[dict]:
    """Whether two models' subgroup gaps differ, on the same images: paired bootstrap of gap(other) - gap(reference).

    ``reference`` and ``other`` are (predictions aligned with ``labels``, thresholds). Gaps compared: under- and
    overdiagnosis, and each finding's sensitivity, of every subgroup where the labels give the group and its rest
    at least ``min_count`` of the denominator (the same for both models). ``differ`` is True when the 95%
    interval of the difference excludes 0, None without resamples.
    """
    attributes, _ = group_images(meta, age_edges)
    models = [truth_and_calls(labels, predictions, thresholds) for predictions, thresholds in (reference, other)]
    cells = [count_cells(attributes, truth, called, n_bootstrap, seed) for truth, called in models]
    measures = [("underdiagnosis", "any", len(FINDINGS), "sensitivity", "positives", -1.0),
                ("overdiagnosis", "any", len(FINDINGS), "fpr", "negatives", 1.0),
                *[("sensitivity", f, j, "sensitivity", "positives", 1.0) for j, f in enumerate(FINDINGS)]]
    rows = []
    for a, attribute in enumerate(attributes):
        now = [rates(c[0][a]) for c in cells]
        boot = [rates(c[1][a]) for c in cells]
        for g, name in enumerate(attribute.groups):
            for measure, finding, j, rate, denominator, sign in measures:
                if min(now[0][denominator][g, j], now[0][f"rest_{denominator}"][g, j]) < min_count:
                    continue
                gaps = [sign * (r[rate][g, j] - r[f"rest_{rate}"][g, j]) for r in now]
                samples = sign * ((boot[1][rate] - boot[1][f"rest_{rate}"]) - (boot[0][rate] - boot[0][f"rest_{rate}"]))
                ci = _interval(samples[:, g, j]) if n_bootstrap else None
                rows.append({"attribute": attribute.name, "group": name, "measure": measure, "finding": finding,
                             "gap_reference": _finite(gaps[0]), "gap": _finite(gaps[1]),
                             "difference": _finite(gaps[1] - gaps[0]), "difference_ci": ci,
                             "differ": None if ci is None else not ci[0] <= 0 <= ci[1]})
    return rows


def summary_table(audit: SubgroupAudit, finding: str | None = None) -> pd.DataFrame:
    """One row per subgroup, each number as "value (95% CI low-high)" or why it is withheld, for pages.

    Without ``finding``: under- and overdiagnosis with their gaps; with one: its AUC, sensitivity and
    false-positive rate with gaps.
    """
    def text(value: float | None, interval: list[float] | None, signed: bool = False) -> str:
        number = f"{value:+.3f}" if signed else f"{value:.3f}"
        return number + (f" ({interval[0]:+.3f} to {interval[1]:+.3f})" if signed and interval else
                         f" ({interval[0]:.3f}-{interval[1]:.3f})" if interval else "")

    measures = ["underdiagnosis", "overdiagnosis"] if finding is None else ["auc", "sensitivity", "fpr"]
    names = {"underdiagnosis": "Underdiagnosis", "overdiagnosis": "Overdiagnosis", "auc": "AUC",
             "sensitivity": "Sensitivity", "fpr": "False-positive rate"}
    rows = []
    for group in audit.groups:
        row: dict[str, object] = {"Subgroup": f"{group.attribute}: {group.name}", "Images": group.n_images}
        if finding is None:
            row |= {"Abnormal": group.n_abnormal, "Normal": group.n_normal}
        else:
            cell = group.findings[finding]
            row |= {"Positives": cell.n_positive, "Negatives": cell.n_negative}
        for measure in measures:
            rate = getattr(group, measure) if finding is None else getattr(group.findings[finding], measure)
            shown = rate.too_few or ("undefined" if rate.value is None else text(rate.value, rate.ci))
            row[f"{names[measure]} (95% CI)"] = shown
            if measure != "auc":
                row[f"{names[measure]} gap to rest (95% CI)"] = (
                    "" if rate.value is None else REST_TOO_FEW.format(audit.min_count) if rate.gap is None
                    else text(rate.gap, rate.gap_ci, signed=True))
        rows.append(row)
    return pd.DataFrame(rows)


def audit_folder(eval_dir: str | Path, *, metadata_file: str | Path | None = None,
                 age_edges: Sequence[int] = DEFAULT_AGE_EDGES, min_count: int = DEFAULT_MIN_COUNT) -> SubgroupAudit:
    """Add the subgroup files to an existing evaluation folder from its own labels, predictions and thresholds.

    For evaluations written before the audit existed; metrics.json is left as it is, and the resamples and
    seed are the ones its AUC intervals used. `InputError` when no image has an age, sex or view.
    """
    from pipeline.evaluation.results import read_metrics, read_scored, write_subgroups

    summary = read_metrics(eval_dir)
    labels, predictions = read_scored(eval_dir)
    evaluation = Evaluation(summary, predictions, labels, pd.DataFrame(), pd.DataFrame(), pd.DataFrame())
    result, meta, note = audit_evaluation(evaluation, metadata_file=metadata_file, age_edges=age_edges,
                                          min_count=min_count, n_bootstrap=summary.bootstrap.n_resamples,
                                          seed=summary.bootstrap.seed)
    if result is None:
        raise InputError(f"{eval_dir}: {note}")
    write_subgroups(result, meta, eval_dir)
    return result
