"""What the pages show of conformal guarantees: the Guarantees view of Model performance, and the three answers
(ruled out / uncertain / flagged) on Predict.

Kept out of the page files so that the pages only call it; the numbers come from `pipeline.evaluation.conformal`
and the evaluation folder's conformal.json (`pipeline.evaluation.results`), the figure from `pipeline.plots`.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import shared
import streamlit as st

from pipeline import plots
from pipeline.evaluation import conformal, provenance, results
from pipeline.evaluation.results import Conformal, Realised

ANSWER_COLUMNS = ("Flagged", "Uncertain", "Ruled out")
EXPLAIN = (
    "**What the guarantee says:** if new images are like the calibration images (exchangeable with them), a new "
    "image that has the finding is *ruled out* with probability at most the promised miss rate, and one without it "
    "is *flagged* with probability at most the promised false-alarm rate, on average over calibration sets. "
    "**What it does not say:** anything about one image, about images from another hospital or scanner, or how "
    "often a flagged image has the finding. See docs/conformal.md."
)


@st.cache_data(show_spinner=False)
def _read(folder: str, modified: float) -> tuple[Conformal | None, pd.DataFrame | None]:
    return results.read_conformal(folder), results.read_risk_coverage(folder)


def read(folder: Path) -> tuple[Conformal | None, pd.DataFrame | None]:
    """An evaluation folder's guarantees and risk-coverage curve (None, None without them), cached until rewritten."""
    path = Path(folder) / results.CONFORMAL_JSON
    return _read(str(folder), path.stat().st_mtime if path.is_file() else 0.0)


def _rate(rate: Realised | None) -> str:
    if rate is None or rate.rate is None:
        return ""
    return f"{rate.rate:.3f} [{rate.ci[0]:.3f}, {rate.ci[1]:.3f}] ({rate.count}/{rate.n})"


def guarantee_table(found: Conformal) -> pd.DataFrame:
    """One row per finding: thresholds, the promised rates, and the rates realised on the evaluated images."""
    rows = []
    for finding, g in found.findings.items():
        rows.append({
            "Finding": finding,
            "Validation positives": g.n_positive,
            "Ruled out below": g.miss_threshold,
            "Miss rate promised": g.miss_bound,
            "Miss rate here [95% CI]": _rate(g.test_misses) if g.miss_threshold is not None else "too few positives",
            "Validation negatives": g.n_negative,
            "Flagged above": g.false_alarm_threshold,
            "False-alarm rate promised": g.false_alarm_bound,
            "False alarms here [95% CI]": (_rate(g.test_false_alarms) if g.false_alarm_threshold is not None
                                           else "too few negatives"),
            "Note": "; ".join(g.notes),
        })
    return pd.DataFrame(rows)


def show_guarantees(name: str, folder: Path) -> None:
    """The Guarantees view of one evaluation: the per-finding table, the image level, the risk-coverage curve."""
    found, curve = read(folder)
    if found is None:
        st.info(f"{name} has no conformal thresholds. Evaluate with validation data and `--miss-rate ALPHA` "
                "(e.g. `--valid-predictions <run>/eval-valid --miss-rate 0.2`) to add them.")
        return
    st.markdown(
        f"**{name}**: miss rate {found.miss_rate:g}, false-alarm rate {found.false_alarm_rate:g}; calibrated on "
        f"`{shared.display_path(found.calibration)}` ({found.calibration_images} images), checked on "
        f"`{shared.display_path(found.test or '?')}`."
    )
    numbers = ["Ruled out below", "Miss rate promised", "Flagged above", "False-alarm rate promised"]
    st.dataframe(guarantee_table(found), hide_index=True, height="content",
                 column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in numbers})
    st.caption(
        "Promised: k / (n + 1), the finite-sample rate the k-th validation score guarantees (at most the rate asked). "
        "Here: the rate on this evaluation's images, with its exact binomial 95% interval; the data agree with the "
        "promise when it lies within the interval or above it, and an interval wholly above it says the promise "
        "did not hold here. Findings with too few validation positives get no threshold: nothing "
        "is ruled out for them."
    )
    image = found.image
    if image.threshold is None:
        st.markdown(f"**Image level:** {image.note}.")
    else:
        share = plots.format_ci(image.test_missed_share, image.test_missed_share_ci)
        st.markdown(
            f"**Image level** (conformal risk control): the findings scoring at least {image.threshold:.3f} form the "
            f"set that cannot be ruled out (calibrated on {image.n_images} validation images with a finding). On "
            f"the {image.test_n_images} images here with a finding, the set missed a share {share} of their "
            f"findings (promised at most {found.miss_rate:g}); sets held {image.test_mean_set_size:.1f} of 14 "
            "findings on average."
        )
    st.info(EXPLAIN, icon=":material/info:")
    if curve is not None:
        shared.chart(plots.risk_coverage_figure(curve, found))
        st.caption(
            "Risk-coverage: the model abstains on its least certain images first (left to right: fewer images "
            "answered). Left: the share of positives ruled out (solid, with its exact binomial 95% interval "
            f"shaded; dotted where fewer than {results.MIN_COUNT} positives remain: too few for a rate) and of each "
            "image's findings outside its set (dashed) among the images kept; right: their mean AUC. Measured on "
            f"`{shared.display_path(found.test or '?')}`, with few images: the curve is noisy."
        )


# --- Predict -------------------------------------------------------------------------------------------------------


def answers_table(found: Conformal, names: list[str], probabilities) -> pd.DataFrame:
    """One row per finding: probability, answer and the guarantee it carries."""
    given = conformal.answers(found, dict(zip(names, (float(p) for p in probabilities), strict=True)))
    return pd.DataFrame([{"Finding": f, "Probability": float(p), "Answer": given[f].value,
                          "Guarantee": conformal.guarantee_text(found, f, given[f])}
                         for f, p in zip(names, probabilities, strict=True) if f in given])


def show_answers(found: Conformal | None, source: str, names: list[str], answer) -> None:
    """The three answers of one image with their guarantees; an out-of-distribution image gets none, and why."""
    if found is None:
        st.caption(f"No conformal answers: {source}.")
        return
    st.subheader("Ruled out, uncertain or flagged")
    if not answer.verdict.in_distribution:
        st.warning("**No guarantee for this image:** " + conformal.OOD_REASON.format(answer.verdict.reason) + ".",
                   icon=":material/block:")
        return
    table = answers_table(found, names, answer.probabilities)
    order = {"flagged": 0, "uncertain": 1, "ruled out": 2}
    table = table.sort_values("Answer", key=lambda column: column.map(order), kind="stable")
    st.dataframe(table, hide_index=True, height="content",
                 column_config={"Probability": st.column_config.NumberColumn(format="%.3f")})
    chosen = conformal.image_set(found, dict(zip(names, (float(p) for p in answer.probabilities), strict=True)))
    if chosen is not None:
        st.markdown(f"**Image-level set** (cannot be ruled out): {', '.join(chosen) or 'none'}. "
                    f"{conformal.image_set_text(found).capitalize()}.")
    st.caption(f"Conformal answers, {source}: miss rate at most {found.miss_rate:g}, false-alarm rate at most "
               f"{found.false_alarm_rate:g}, for images like the calibration images. " + EXPLAIN.replace("**", ""))


def batch_columns(found: Conformal | None, names: list[str], answer) -> dict[str, str]:
    """The batch table's answer columns of one image: the findings flagged, uncertain and ruled out."""
    if found is None or answer is None:
        return {}
    if not answer.verdict.in_distribution:
        return dict.fromkeys(ANSWER_COLUMNS, "no guarantee (out of distribution)")
    given = conformal.answers(found, dict(zip(names, (float(p) for p in answer.probabilities), strict=True)))
    return {column: ", ".join(f for f, a in given.items() if a.value == column.lower()) for column in ANSWER_COLUMNS}


def source_of(evaluation: Path | None, checkpoint: Path) -> tuple[Conformal | None, str]:
    """The run's guarantees (from its headline evaluation, if it scored ``checkpoint``'s weights) and where they come
    from; an evaluation matched by file name only says so (`pipeline.evaluation.provenance`)."""
    if evaluation is None:
        return None, "the run has no evaluation"
    found, _ = read(evaluation)
    shown = f"`{shared.display_path(evaluation)}`"
    if found is None:
        return None, f"{shown} has no conformal thresholds (evaluate with `--miss-rate`)"
    matched = provenance.match(evaluation, checkpoint, shown)
    if not matched.ok:
        return None, matched.note
    calibrated = f"calibrated on `{shared.display_path(found.calibration)}` ({found.calibration_images} images)"
    return found, f"{matched.note or f'thresholds from {shown}'}, {calibrated}"
