"""Recipe: the library from Python, end to end on the shipped NIH sample, in five steps.

Load the labels, check that no patient sits in two splits, train a tiny DenseNet121, evaluate it with
confidence intervals, and look at one Grad-CAM map. The model is deliberately tiny (64 px, random
initial weights, one epoch on 64 images) so the whole recipe takes under a minute of CPU time; its AUCs
are near chance. For a real model change `SIZE` to 320, `WEIGHTS` to "imagenet" and train on the full
lists (README: Training on the full dataset).

    python docs/examples/recipe.py [OUT_FOLDER]      # from the repository root, or anywhere once installed

The command line does the same steps: `python -m pipeline leakage`, `train`, `evaluate`, `predict --gradcam`.
"""

import sys
import tempfile
from pathlib import Path

from pipeline.core import paths
from pipeline.data import imaging, label_files, leakage
from pipeline.evaluation import evaluate
from pipeline.explain import gradcam
from pipeline.networks import densenet
from pipeline.training import loop

SIZE, WEIGHTS, EPOCHS, TRAIN_IMAGES = 64, "none", 1, 64
out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="chestxray-recipe-"))
images = paths.images_dir()

# 1. Labels: the NIH Data_Entry CSV or the course's one-hot CSV, read into one canonical table
#    (Image, PatientId, the 14 findings as 0/1, View, Age, Sex); every listed image must exist.
train = label_files.load_labels(paths.label_file("train-small.csv"), images)
valid = label_files.load_labels(paths.label_file("valid-small.csv"), images)
test = label_files.load_labels(paths.label_file("test.csv"), images)
print(f"1. labels: {len(train)} train, {len(valid)} valid, {len(test)} test images")

# 2. Leakage: a patient on both sides of a split lets a model score by recognising the patient.
reports = leakage.check_all_pairs({"train": train, "valid": valid, "test": test})
print("2. leakage:", "; ".join(f"{r.name_a}/{r.name_b} share {len(r.patients)} patients" for r in reports))
if any(report.leaks for report in reports):
    sys.exit(leakage.format_reports([r for r in reports if r.leaks]) + "\nsplit by patient (`leakage.split`)")

# 3. Train: the class-weighted loss, validated after each epoch; the run folder keeps best.keras,
#    config.json and history.csv. Here on a subset of the images, written as label files.
subset = label_files.write_splits(
    {"train": train.head(TRAIN_IMAGES), "valid": valid, "test": test}, out / "splits",
    ["train.csv", "valid.csv", "test.csv"],
)
run = out / "run"
history = loop.train(subset["train"], subset["valid"], images, run, image_size=SIZE, epochs=EPOCHS,
                     batch_size=16, weights=WEIGHTS, export=False, log=lambda line: None)
print(f"3. trained {len(history)} epoch(s): validation mean AUC {history['val_mean_auc'].iloc[-1]:.3f}")

# 4. Evaluate on the test images: per-finding AUC with a bootstrap 95% interval over images, and operating
#    thresholds chosen on the validation images (Youden's J), written as an evaluation folder.
evaluation = evaluate.evaluate_files(subset["test"], run / "eval-test", checkpoint=run / "best.keras",
                                     images=images, valid_labels=subset["valid"], n_bootstrap=200)
summary = evaluation.summary
low, high = summary.mean_auc_ci or (float("nan"), float("nan"))
print(f"4. test mean AUC {summary.mean_auc:.3f} (95% CI {low:.3f}-{high:.3f}) on {summary.n_images} images")

# 5. Grad-CAM: where the model's evidence for its most probable finding lies in one test image.
net = densenet.load(run / "best.keras")
image = imaging.load_image(images / test["Image"].iloc[0])
probabilities, maps = gradcam.heatmaps(net, image)
top = int(probabilities.argmax())
finding = densenet.finding_names(net)[top]
gradcam.write_overlay(gradcam.overlay(image, maps[top]), out / "gradcam.png")
print(f"5. Grad-CAM of {finding} (p = {probabilities[top]:.2f}) on {test['Image'].iloc[0]}: {out / 'gradcam.png'}")
