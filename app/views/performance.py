"""Model performance: ROC, precision-recall and calibration curves, operating points, comparisons, training history."""

from dataclasses import asdict
from pathlib import Path

import guarantees_view
import localization_view
import pandas as pd
import shared
import streamlit as st

from pipeline import plots
from pipeline.core import paths
from pipeline.core.findings import FINDINGS
from pipeline.evaluation import compare, results, subgroups
from pipeline.evaluation.results import SavedEvaluation, Summary
from pipeline.explain import localization_folder
from pipeline.training import runs

ALL = "All findings"
OPERATING_COLUMNS = {"sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV",
                     "f1": "F1", "tp": "TP", "fp": "FP", "tn": "TN", "fn": "FN"}


@st.cache_data(show_spinner="Comparing evaluations (DeLong test and paired bootstrap)...")
def comparison(folders: tuple[str, ...], n_bootstrap: int, modified: tuple[float, ...]) -> pd.DataFrame:
    """`pipeline.evaluation.compare.compare` as a table; ``modified`` (metrics.json mtimes) invalidates the cache."""
    return compare.comparison_frame(compare.compare(list(folders), n_bootstrap=n_bootstrap, seed=0))


def model_name(source: str | None) -> str:
    """The evaluated model's path, marked when that file is no longer there (e.g. a run shipped without it)."""
    if source is None:
        return "?"
    missing = source.endswith(".keras") and not (paths.REPO_ROOT / source).is_file()
    return shared.display_path(source) + (" (file not present)" if missing else "")


def data_of(m: Summary) -> str:
    """Which data an evaluation measured: ``55 images of `nih/test.csv```."""
    return f"{m.n_images} images of `{shared.display_path(m.labels_file or '?')}`"


def measured_on(evals: dict[str, SavedEvaluation]) -> str:
    """One sentence naming the data of each evaluation."""
    return "Measured: " + "; ".join(f"{name} on {data_of(r.summary)}" for name, r in evals.items()) + "."


st.title("Model performance")
artifacts = paths.artifacts_dir()
run = shared.chosen_run()
found = {paths.shorten(path, artifacts): path for path in runs.find_evaluations(artifacts)}
if not found:
    where = shared.display_path(artifacts) + shared.env_note()
    st.caption(f"No evaluation (a folder with metrics.json) under `{where}`.")
    if run is not None and run.checkpoint is not None:
        st.info(f"Run {run.name} has a checkpoint but no evaluation yet; evaluate it with:")
        st.code(shared.evaluate_command(run.checkpoint, run.path / "eval-test"), language="bash")
    else:
        shared.explain_missing_run()
    st.stop()

if run is not None and run.checkpoint is None:
    st.info(shared.no_checkpoint_note(run), icon=":material/info:")
    st.code(shared.train_command(run.path), language="bash")

unevaluated = [r for r in runs.find_runs(artifacts) if r.checkpoint is not None and not r.evaluations]
if unevaluated:
    with st.expander(f"Checkpoints without an evaluation ({len(unevaluated)})"):
        st.code("\n".join(shared.evaluate_command(r.checkpoint, r.path / "eval-test") for r in unevaluated),
                language="bash")

best = shared.headline_evaluation(run) if run is not None else None
default = [paths.shorten(best, artifacts)] if best is not None else [next(iter(found))]
chosen = st.multiselect(
    "Evaluations", list(found), default=default,
    help="Folders holding a metrics.json under the artifacts folder. The first chosen is the reference of comparisons.",
)
if not chosen:
    st.info("Choose one or more evaluations.")
    st.stop()
evals: dict[str, SavedEvaluation] = {}
for name in chosen:
    with shared.guard():
        evals[name] = shared.read_evaluation(found[name])
if not evals:
    st.info("None of the chosen evaluations could be read; choose another or evaluate again.")
    st.stop()
chosen = list(evals)

rows = []
for name, result in evals.items():
    m = result.summary
    rows.append({
        "Evaluation": name,
        "Model": model_name(m.model_source),
        "Labels file": shared.display_path(m.labels_file or "?"),
        "Images": m.n_images,
        "Mean AUC (95% CI)": plots.format_ci(m.mean_auc, m.mean_auc_ci),
        "Thresholds": m.threshold_key,
    })
st.dataframe(pd.DataFrame(rows), hide_index=True)
st.caption("Every number on this page was measured on the labels file and images named here.")
for name, result in evals.items():
    notes = result.summary.notes
    if notes:
        with st.expander(f"Notes on {name} ({len(notes)})"):
            st.markdown("\n".join(f"- {note}" for note in notes))

finding = st.selectbox("Finding", [ALL, *FINDINGS])
located = localization_folder.find_results(run.path) if run is not None else []
tabs = st.tabs(["ROC", "Precision-recall", "Calibration", "Operating points", "Comparison", "Training history",
                "Subgroups", *(["Localization"] if located else []), "Guarantees"])

one = None if finding == ALL else finding
with tabs[0]:
    shared.chart(plots.roc_figure(evals, one))
    st.caption(
        "Each curve traces sensitivity against 1 - specificity as the threshold falls; the dotted diagonal is "
        "chance. AUC with its 95% bootstrap interval over images in the legend (in the table below for a grid)"
        + ("; diamonds mark the operating thresholds. " if one else ". ") + measured_on(evals)
    )
    table = pd.DataFrame({name: {f: plots.auc_legend(r.summary, f).removeprefix("AUC ") for f in FINDINGS}
                          for name, r in evals.items()})
    table.insert(0, "positives", [evals[chosen[0]].summary.n_positive[f] for f in FINDINGS])
    with st.expander("AUC per finding", expanded=len(evals) > 1 and one is None):
        st.dataframe(table, height="content")
        st.caption(f"positives: images with the finding in {chosen[0]}; few positives mean wide intervals.")

with tabs[1]:
    shared.chart(plots.pr_figure(evals, one))
    st.caption(
        "Precision against recall as the threshold falls; a useless model stays at the prevalence. Legend: "
        "average precision (AP). " + measured_on(evals)
    )

with tabs[2]:
    shared.chart(plots.calibration_figure(evals, one))
    st.caption(
        "Reliability diagram: images binned by predicted probability; a calibrated model lies on the diagonal. "
        "Empty bins are left out. Legend: Brier score (0 is perfect). " + measured_on(evals)
    )

with tabs[3]:
    for name, result in evals.items():
        m = result.summary
        frame = pd.DataFrame({f: asdict(point) for f, point in m.at_threshold.items()}).T.rename(
            columns=OPERATING_COLUMNS)
        frame.insert(0, "Threshold", pd.Series(m.thresholds))
        if finding != ALL:
            frame = frame.loc[[finding]]
        st.subheader(name)
        rates = ["Threshold", "Sensitivity", "Specificity", "PPV", "NPV", "F1"]
        st.dataframe(frame, height="content",
                     column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in rates})
        source = m.threshold_source.describe(m.target_sensitivity)
        st.caption(
            f"An image counts as positive when its probability is at least the threshold, {source}. Counts and "
            f"rates on {data_of(m)}; empty where a rate has no denominator."
        )

with tabs[4]:
    if len(evals) < 2:
        st.info("Choose two or more evaluations above to compare them; the first chosen is the reference.")
    else:
        n_bootstrap = st.number_input("Bootstrap resamples", 0, 5000, 1000, step=500,
                                      help="For the intervals of the AUC differences; 0: DeLong's test only.")
        folders = tuple(str(found[name]) for name in chosen)
        with shared.guard():
            result = comparison(folders, int(n_bootstrap), tuple((Path(p) / "metrics.json").stat().st_mtime
                                                                 for p in folders))
            names = {str(found[name]): name for name in chosen}
            result = result.assign(eval=result["eval"].map(names))
            if finding != ALL:
                result = result[result["finding"].isin([finding, "mean"])]
            st.dataframe(result, hide_index=True, height="content", column_config={
                "eval": "Evaluation", "finding": "Finding",
                "auc_reference": st.column_config.NumberColumn(f"AUC of {chosen[0]}", format="%.3f"),
                "auc": st.column_config.NumberColumn("AUC", format="%.3f"),
                "difference": st.column_config.NumberColumn("Difference", format="%+.3f"),
                "ci_low": st.column_config.NumberColumn("95% CI low", format="%+.3f"),
                "ci_high": st.column_config.NumberColumn("95% CI high", format="%+.3f"),
                "p_value": st.column_config.NumberColumn("DeLong p", format="%.4f"),
            })
            st.caption(
                f"Difference = AUC of the evaluation - AUC of the reference ({chosen[0]}), on the same "
                f"{evals[chosen[0]].summary.n_images} images; two-sided DeLong test per finding, paired "
                "bootstrap interval. With 14 findings, expect about one p < 0.05 by chance."
            )

with tabs[5]:
    run_dirs = {path.parent for path in (found[name] for name in chosen)} | ({run.path} if run is not None else set())
    histories, validation = {}, []
    for folder in sorted(run_dirs):
        with shared.guard():
            history = runs.read_history(folder)
            if history is not None and len(history):
                histories[folder.name] = history
                config = runs.read_config(folder)
                if "valid" in config:
                    count = f" ({config['n_valid']} images)" if "n_valid" in config else ""
                    validation.append(f"{folder.name} on `{shared.display_path(config['valid'])}`{count}")
    if not histories:
        st.info("None of these runs has a readable history.csv; `chestxray train` writes one per run.")
    else:
        left, right = st.columns(2)
        for column, fig in zip((left, right), plots.training_figures(histories), strict=True):
            with column:
                shared.chart(fig)
        st.caption(
            "Solid: training loss; dashed: validation loss. Read from each run's history.csv"
            + ("; validated " + "; ".join(validation) + "." if validation else ".")
        )


@st.cache_data(show_spinner=False)
def read_subgroups(folder: str, modified: float) -> results.SubgroupAudit | None:
    """`pipeline.evaluation.results.read_subgroups`, cached until subgroups.json is rewritten."""
    return results.read_subgroups(folder)


def show_subgroups(name: str, folder: Path, summary: Summary) -> None:
    """The Subgroups view of one evaluation: honesty first, then tables and forest plots from `pipeline.plots`."""
    path = folder / results.SUBGROUPS_JSON
    audit = read_subgroups(str(folder), path.stat().st_mtime if path.is_file() else 0.0)
    if audit is None:
        st.info(f"{name} has no subgroup audit (evaluated before it existed, or without age, sex and view). "
                "Evaluating again writes one wherever the NIH metadata is there:")
        if summary.checkpoint:
            st.code(shared.evaluate_command(Path(summary.checkpoint), folder), language="bash")
        return
    thresholds = summary.threshold_source.describe(summary.target_sensitivity)
    st.caption(
        f"Measured on {data_of(summary)} at its operating thresholds, {thresholds}; "
        f"ages, sexes and views from {audit.metadata}. Each row says how many images the subgroup has. "
        f"A number resting on fewer than {audit.min_count} positives (or negatives) shows \"too few\". "
        f"Gap = subgroup - the other images of the same attribute, with the gap's own bootstrap interval "
        f"({audit.n_resamples} resamples)."
    )
    if audit.n_images < subgroups.SMALL_EVALUATION:
        st.warning(f"Only {audit.n_images} images: far too few for conclusions about subgroups. The embedded "
                   "55-image test set shows how the audit reads, not how the model treats anyone.")
    st.markdown(f"**Underdiagnosis**: abnormal images (at least one finding) that the model calls normal; "
                f"{audit.normal_rule}. **Overdiagnosis**: normal images called abnormal.")
    st.dataframe(subgroups.summary_table(audit), hide_index=True, height="content")
    measure = st.radio("Gaps in", list(plots.GAP_MEASURES), horizontal=True,
                       format_func=plots.GAP_MEASURES.get, key=f"gap-{name}")
    per_finding = measure in ("sensitivity", "fpr")
    if per_finding and one is None:
        st.info("Choose a finding above to see its sensitivity or false-positive rate gaps.")
    else:
        shared.chart(plots.subgroup_gap_figure(audit, measure, one if per_finding else None))
    if one is None:
        st.caption("Choose a finding above for its AUC per subgroup.")
    else:
        shared.chart(plots.subgroup_auc_figure(audit, one))
        st.dataframe(subgroups.summary_table(audit, one), hide_index=True, height="content")
    with st.expander(f"Notes on the audit ({len(audit.notes)})"):
        st.markdown("\n".join(f"- {note}" for note in audit.notes))
    csv = shared.display_path(folder / results.SUBGROUPS_CSV)
    st.caption(f"Every number per subgroup and finding, with intervals and counts: `{csv}`.")


with tabs[6]:
    shown = st.selectbox("Evaluation", chosen, key="subgroups-eval") if len(chosen) > 1 else chosen[0]
    with shared.guard():
        show_subgroups(shown, found[shown], evals[shown].summary)

if located:
    with tabs[7]:
        localization_view.show_results(located)

with tabs[-1]:  # conformal guarantees (issue 19)
    for name in evals:
        with shared.guard():
            guarantees_view.show_guarantees(name, found[name])
