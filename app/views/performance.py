"""Model performance: ROC, precision-recall and calibration curves, operating points, comparisons, training history."""

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots

from app import localization as localization_view
from app import shared
from pipeline import evaluate, localization, runs
from pipeline.errors import InputError
from pipeline.findings import FINDINGS

ALL = "All findings"
OPERATING_COLUMNS = {"sensitivity": "Sensitivity", "specificity": "Specificity", "ppv": "PPV", "npv": "NPV",
                     "f1": "F1", "tp": "TP", "fp": "FP", "tn": "TN", "fn": "FN"}
THRESHOLD_SOURCES = {
    "validation_youden": "chosen on validation data (maximum Youden's J)",
    "file": "read from a thresholds file",
    "default_0.5": "0.5 for every finding (no validation data given)",
}


@st.cache_data(show_spinner="Comparing evaluations (DeLong test and paired bootstrap)...")
def comparison(paths: tuple[str, ...], n_bootstrap: int, modified: tuple[float, ...]) -> pd.DataFrame:
    """`pipeline.evaluate.compare` as a table; ``modified`` (metrics.json mtimes) invalidates the cache."""
    return evaluate.comparison_frame(evaluate.compare(list(paths), n_bootstrap=n_bootstrap, seed=0))


def curves(evals: dict[str, dict], finding: str, kind: str, axes: tuple[str, str], titles: tuple[str, str],
           legend: Callable[[dict, str], str]) -> go.Figure:
    """Curves from each evaluation's ``kind`` frame (roc, pr or calibration), ``axes`` its x and y columns.

    One finding: a curve per evaluation. All findings of one evaluation: a curve per finding. All findings of
    several: a grid of 14 panels. ``legend(metrics, finding)`` is the figure of merit put after each name.
    """
    x, y = axes
    findings = list(FINDINGS) if finding == ALL else [finding]
    grid = len(evals) > 1 and finding == ALL
    fig = make_subplots(rows=4, cols=4, subplot_titles=findings, horizontal_spacing=0.05, vertical_spacing=0.07) \
        if grid else go.Figure()
    for e, (name, result) in enumerate(evals.items()):
        frame = result[kind]
        for f, current in enumerate(findings):
            points = frame[frame["finding"] == current].dropna(subset=[x, y])
            label = name if grid else f"{name if finding != ALL else current}: {legend(result['metrics'], current)}"
            trace = go.Scatter(
                x=points[x], y=points[y], name=label, mode="lines+markers" if kind == "calibration" else "lines",
                line={"color": shared.SERIES[(f if finding == ALL and not grid else e) % len(shared.SERIES)]},
                legendgroup=name, showlegend=not grid or f == 0,
                hovertemplate=f"{current}, {name}<br>{x} %{{x:.3f}}, {y} %{{y:.3f}}<extra></extra>",
            )
            fig.add_trace(trace, **({"row": f // 4 + 1, "col": f % 4 + 1} if grid else {}))
    if kind != "pr":  # y = x: chance for ROC, perfect calibration for a reliability diagram
        fig.add_shape(type="line", x0=0, y0=0, x1=1, y1=1, line={"dash": "dot", "color": shared.NEUTRAL},
                      **({"row": "all", "col": "all", "exclude_empty_subplots": True} if grid else {}))
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1.02])
    if grid:  # no room for axis titles on 14 panels: the chart's title names the axes
        fig.update_layout(title=f"{titles[1]} against {titles[0].lower()}, per finding")
        return shared.side_legend(shared.style(fig, height=900))
    fig.update_layout(xaxis_title=titles[0], yaxis_title=titles[1])
    shared.style(fig, height=520)
    return shared.side_legend(fig) if finding == ALL or len(evals) > 2 else fig


def auc_legend(m: dict, finding: str) -> str:
    return "AUC " + shared.fmt_ci(m["auc"][finding], m["auc_ci"][finding])


def ap_legend(m: dict, finding: str) -> str:
    ap = m["average_precision"][finding]
    return f"AP {ap:.3f}" if ap is not None else "AP undefined"


def brier_legend(m: dict, finding: str) -> str:
    return f"Brier {m['brier'][finding]:.3f}"


def data_of(m: dict) -> str:
    """Which data an evaluation measured: ``55 images of `nih/test.csv```."""
    return f"{m['n_images']} images of `{shared.display_path(m.get('labels_file', '?'))}`"


def measured_on(evals: dict[str, dict]) -> str:
    """One sentence naming the data of each evaluation."""
    return "Measured: " + "; ".join(f"{name} on {data_of(r['metrics'])}" for name, r in evals.items()) + "."


st.title("Model performance")
artifacts = runs.artifacts_dir()
run = shared.chosen_run()
found = {runs.label(path, artifacts): path for path in runs.find_evaluations(artifacts)}
if not found:
    where = shared.display_path(artifacts) + shared.env_note()
    st.caption(f"No evaluation (a folder with metrics.json) under `{where}`.")
    if run is not None and run.checkpoint is not None:
        st.info(f"Run {run.name} has a checkpoint but no evaluation yet; evaluate it with:")
        st.code(shared.evaluate_command(run.checkpoint, run.path / "eval-test"), language="bash")
    else:
        shared.explain_missing_run()
    st.stop()

unevaluated = [r for r in runs.find_runs(artifacts) if r.checkpoint is not None and not r.evaluations]
if unevaluated:
    with st.expander(f"Checkpoints without an evaluation ({len(unevaluated)})"):
        st.code("\n".join(shared.evaluate_command(r.checkpoint, r.path / "eval-test") for r in unevaluated),
                language="bash")

best = shared.headline_evaluation(run) if run is not None else None
default = [runs.label(best, artifacts)] if best is not None else [next(iter(found))]
chosen = st.multiselect(
    "Evaluations", list(found), default=default,
    help="Folders holding a metrics.json under the artifacts folder. The first chosen is the reference of comparisons.",
)
if not chosen:
    st.info("Choose one or more evaluations.")
    st.stop()
evals = {name: shared.load_eval_fresh(found[name]) for name in chosen}

rows = []
for name, result in evals.items():
    m = result["metrics"]
    rows.append({
        "Evaluation": name,
        "Model": shared.display_path(m.get("checkpoint") or m.get("predictions_file") or "?"),
        "Labels file": shared.display_path(m.get("labels_file", "?")),
        "Images": m["n_images"],
        "Mean AUC (95% CI)": shared.fmt_ci(m.get("mean_auc"), m.get("mean_auc_ci")),
        "Thresholds": m.get("threshold_source", "?"),
    })
st.dataframe(pd.DataFrame(rows), hide_index=True)
st.caption("Every number on this page was measured on the labels file and images named here.")
for name, result in evals.items():
    notes = result["metrics"].get("notes") or []
    if notes:
        with st.expander(f"Notes on {name} ({len(notes)})"):
            st.markdown("\n".join(f"- {note}" for note in notes))

finding = st.selectbox("Finding", [ALL, *FINDINGS])
located = localization.find_results(run.path) if run is not None else []
tabs = st.tabs(["ROC", "Precision-recall", "Calibration", "Operating points", "Comparison", "Training history",
                *(["Localization"] if located else [])])

with tabs[0]:
    fig = curves(evals, finding, "roc", ("fpr", "tpr"), ("False positive rate (1 - specificity)",
                 "True positive rate (sensitivity)"), auc_legend)
    if finding != ALL:  # each evaluation's operating point: its threshold's (1 - specificity, sensitivity)
        for e, (name, result) in enumerate(evals.items()):
            point = result["metrics"]["at_threshold"][finding]
            if point["sensitivity"] is not None and point["specificity"] is not None:
                fig.add_trace(go.Scatter(
                    x=[1 - point["specificity"]], y=[point["sensitivity"]], mode="markers",
                    marker={"size": 11, "symbol": "diamond", "color": shared.SERIES[e % len(shared.SERIES)]},
                    name=f"{name}: threshold {result['metrics']['thresholds'][finding]:.3f}",
                ))
    shared.chart(fig)
    st.caption(
        "Each curve traces sensitivity against 1 - specificity as the threshold falls; the dotted diagonal is "
        "chance. AUC with its 95% bootstrap interval over images in the legend (in the table below for a grid)"
        + ("; diamonds mark the operating thresholds. " if finding != ALL else ". ") + measured_on(evals)
    )
    table = pd.DataFrame({name: {f: auc_legend(r["metrics"], f).removeprefix("AUC ") for f in FINDINGS}
                          for name, r in evals.items()})
    table.insert(0, "positives", [evals[chosen[0]]["metrics"]["n_positive"][f] for f in FINDINGS])
    with st.expander("AUC per finding", expanded=len(evals) > 1 and finding == ALL):
        st.dataframe(table, height="content")
        st.caption(f"positives: images with the finding in {chosen[0]}; few positives mean wide intervals.")

with tabs[1]:
    fig = curves(evals, finding, "pr", ("recall", "precision"), ("Recall (sensitivity)", "Precision (PPV)"),
                 ap_legend)
    if finding != ALL and len(evals) == 1:
        prevalence = next(iter(evals.values()))["metrics"]["prevalence"][finding]
        fig.add_hline(y=prevalence, line_dash="dot", line_color=shared.NEUTRAL,
                      annotation_text=f"prevalence {prevalence:.3f} (chance)")
    shared.chart(fig)
    st.caption(
        "Precision against recall as the threshold falls; a useless model stays at the prevalence. Legend: "
        "average precision (AP). " + measured_on(evals)
    )

with tabs[2]:
    shared.chart(curves(evals, finding, "calibration", ("mean_predicted", "observed"),
                        ("Mean predicted probability (bins of 0.1)", "Observed share of positives"), brier_legend))
    st.caption(
        "Reliability diagram: images binned by predicted probability; a calibrated model lies on the diagonal. "
        "Empty bins are left out. Legend: Brier score (0 is perfect). " + measured_on(evals)
    )

with tabs[3]:
    for name, result in evals.items():
        m = result["metrics"]
        frame = pd.DataFrame(m["at_threshold"]).T.rename(columns=OPERATING_COLUMNS)
        frame.insert(0, "Threshold", pd.Series(m["thresholds"]))
        if finding != ALL:
            frame = frame.loc[[finding]]
        st.subheader(name)
        rates = ["Threshold", "Sensitivity", "Specificity", "PPV", "NPV", "F1"]
        st.dataframe(frame, height="content",
                     column_config={c: st.column_config.NumberColumn(c, format="%.3f") for c in rates})
        source = THRESHOLD_SOURCES.get(m.get("threshold_source"), m.get("threshold_source", "?"))
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
        paths = tuple(str(found[name]) for name in chosen)
        try:
            result = comparison(paths, int(n_bootstrap), tuple((Path(p) / "metrics.json").stat().st_mtime
                                                               for p in paths))
        except InputError as exc:
            st.error(str(exc), icon=":material/block:")
        else:
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
                f"{evals[chosen[0]]['metrics']['n_images']} images; two-sided DeLong test per finding, paired "
                "bootstrap interval. With 14 findings, expect about one p < 0.05 by chance."
            )

with tabs[5]:
    run_dirs = {path.parent for path in (found[name] for name in chosen)} | ({run.path} if run is not None else set())
    histories = {d: runs.read_history(d) for d in sorted(run_dirs)}
    histories = {d: h for d, h in histories.items() if h is not None and len(h)}
    if not histories:
        st.info("None of these runs has a history.csv; `python -m pipeline train` writes one per run.")
    else:
        loss, auc = go.Figure(), go.Figure()
        validation = []
        for r, (folder, history) in enumerate(histories.items()):
            color, name = shared.SERIES[r % len(shared.SERIES)], folder.name
            for column, dash in (("loss", "solid"), ("val_loss", "dash")):
                if column in history:
                    loss.add_trace(go.Scatter(x=history["epoch"], y=history[column], name=f"{name} {column}",
                                              line={"color": color, "dash": dash}, mode="lines+markers"))
            if "val_mean_auc" in history:
                auc.add_trace(go.Scatter(x=history["epoch"], y=history["val_mean_auc"], name=f"{name} val_mean_auc",
                                         line={"color": color}, mode="lines+markers"))
            config = runs.read_config(folder)
            if "valid" in config:
                count = f" ({config['n_valid']} images)" if "n_valid" in config else ""
                validation.append(f"{name} on `{shared.display_path(config['valid'])}`{count}")
        loss.update_layout(title="Loss per epoch", xaxis_title="Epoch", yaxis_title="Loss (mean per image)")
        auc.update_layout(title="Validation mean AUC per epoch", xaxis_title="Epoch", yaxis_title="Mean AUC")
        few_epochs = max(len(h) for h in histories.values()) <= 20
        left, right = st.columns(2)
        for column, fig in ((left, loss), (right, auc)):
            with column:
                shared.chart(shared.style(fig.update_xaxes(dtick=1 if few_epochs else None)))
        st.caption(
            "Solid: training loss; dashed: validation loss. Read from each run's history.csv"
            + ("; validated " + "; ".join(validation) + "." if validation else ".")
        )

if located:
    with tabs[6]:
        localization_view.show_results(located)
