"""Home: what the tool does, the data shown, the demo model and how well it did, the intended use, the credit."""

import shared
import streamlit as st

from pipeline.core import paths
from pipeline.data import stats
from pipeline.training import runs


def label_file(config: dict, key: str, count: str) -> str | None:
    """``nih/train-small.csv (439 images)`` from a run config's file and count, as far as it has them."""
    if key not in config:
        return None
    return f"`{shared.display_path(config[key])}`" + (f" ({config[count]:,} images)" if count in config else "")


st.title("Chest X-ray toolkit")
st.markdown(
    "Multi-label classification of frontal chest X-rays into the 14 findings of the NIH ChestX-ray14 dataset, "
    "as in CheXNet: a DenseNet121 that gives one probability per finding, with Grad-CAM heatmaps showing where "
    "it looked. This dashboard shows the data, checks splits for patient leakage, explains the class-weighted "
    "loss, reports how a trained model performs, and runs it on an image."
)
st.warning(shared.DISCLAIMER, icon=":material/warning:")

left, right = st.columns(2, gap="large")
with left, shared.guard():
    name, path = shared.data_choice()
    st.subheader("The data")
    summary = stats.summarize(shared.load_labels(str(path)))
    a, b, c = st.columns(3)
    a.metric("Images", f"{summary['n_images']:,}")
    b.metric("Patients", f"{summary['n_patients']:,}")
    c.metric("No finding", f"{summary['no_finding']['percent']:.1f}%")
    st.caption(
        f"{name}: `{shared.display_path(path)}`. Switch in the sidebar. The embedded sample is 549 frontal "
        "X-rays at 320 x 320 px, one per patient; the full metadata lists all 112,120 NIH images."
    )

with right:
    st.subheader("The model")
    run = shared.chosen_run()
    if run is None:
        shared.explain_missing_run()
    else:
        config: dict = {}
        with shared.guard():
            config = runs.read_config(run.path)
        evaluation = shared.headline_evaluation(run)
        if evaluation is None:
            st.metric("Mean AUC", "not evaluated")
        else:
            with shared.guard():
                result = shared.read_metrics(evaluation)
                low_high = result.mean_auc_ci
                st.metric(
                    "Mean AUC over the findings",
                    "undefined" if result.mean_auc is None else f"{result.mean_auc:.3f}",
                    help="Area under the ROC curve, averaged over the findings with a defined AUC.",
                )
                ci = f"95% CI {low_high[0]:.3f}-{low_high[1]:.3f}, " if low_high else ""
                where = paths.shorten(evaluation, paths.artifacts_dir())
                st.caption(
                    f"{ci}bootstrap over images; measured on {result.n_images} images of "
                    f"`{shared.display_path(result.labels_file or '?')}` (evaluation `{where}`)."
                )
        facts = {
            "run": f"`{shared.display_path(run.path)}`{shared.env_note()}",
            "trained on": label_file(config, "train", "n_train"),
            "validated on": label_file(config, "valid", "n_valid"),
            "input size": f"{config['image_size']} px" if "image_size" in config else None,
            "epochs (at most)": config.get("epochs"),
            "initial weights": config.get("weights"),
            "loss": config.get("loss"),
        }
        st.markdown("\n".join(f"- **{k}**: {v}" for k, v in facts.items() if v is not None))
        if config.get("weights") == "none":
            st.info(
                f"**A weak model, trained from scratch.** This run started from random weights, not ImageNet "
                f"(the machine that trained it could not download them), and saw only {config.get('n_train', '?')} "
                "images on a CPU. Expect AUCs not far from chance (0.5) and wide intervals. With ImageNet weights "
                "and the full 112,120-image dataset, CheXNet reported a mean AUC of about 0.84 over these 14 "
                "findings, on a different split: its numbers and these are not comparable.",
                icon=":material/info:",
            )
        if run.checkpoint is None:
            st.info(shared.no_checkpoint_note(run), icon=":material/info:")
            st.code(shared.train_command(run.path), language="bash")
        elif evaluation is None:
            st.info("This run has not been evaluated yet; evaluate it with:")
            st.code(shared.evaluate_command(run.checkpoint, run.path / "eval-test"), language="bash")

st.subheader("Pages")
st.markdown(
    "- **Dataset**: prevalence, co-occurrence, demographics and example images, with filters.\n"
    "- **Leakage**: which label files share patients, and why the official NIH split is by patient.\n"
    "- **Class balance**: positive and negative frequencies, and what the weighted loss does to them.\n"
    "- **Model performance**: ROC, precision-recall and calibration curves, operating points, comparisons.\n"
    "- **Predict**: the 14 probabilities and Grad-CAM heatmaps for an uploaded or sample image."
)
st.subheader("Intended use")
st.markdown(
    "Research and teaching: how a chest X-ray classifier is built, evaluated and explained. The embedded "
    "evaluation sets have 1 to 11 positive images per finding, so their confidence intervals are wide; they "
    "demonstrate the pipeline and support no clinical claim. Grad-CAM shows where the model's evidence lies, "
    "not where a finding is."
)
st.subheader("Credit")
st.markdown(shared.CITATION)
