"""The ONNX export answers as the .keras checkpoint does, and the command line serves from it without TensorFlow."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
from conftest import IMAGES, NIH, REPO, TEST_DATA

from pipeline.data import imaging
from pipeline.data.label_files import load_labels
from pipeline.inference import ood, serving
from pipeline.networks import densenet

DEMO = REPO / "artifacts" / "runs" / "densenet121-128-weighted"
REAL = [IMAGES / "00000001_000.png", IMAGES / "00000002_000.png", TEST_DATA / "00000100_000.png"]


@pytest.fixture(scope="module")
def run(small_model, tmp_path_factory):
    """A run folder with the small model's checkpoint, its export and typicality statistics."""
    folder = tmp_path_factory.mktemp("run")
    densenet.save(small_model, folder / "best.keras")
    names = [load_labels(NIH / f"{part}.csv")["Image"] for part in ("train-small", "valid-small")]
    summary = serving.add_serving_artifacts(
        folder, small_model, [IMAGES / n for n in names[0][:40]], [IMAGES / n for n in names[1][:20]]
    )
    assert summary["valid_pass_rate"] >= ood.PASS_RATE and summary["train_images"] == 40
    return folder


def real_images() -> list[np.ndarray]:
    paths = [path for path in REAL if path.is_file()]
    assert len(paths) >= 2
    return [imaging.load_image(path) for path in paths]


def test_export_matches_the_checkpoint(run, small_model):
    onnx_predictor = serving.load_predictor(run / "best.keras")
    assert isinstance(onnx_predictor, serving.OnnxPredictor)
    assert [i.name for i in onnx_predictor._session.get_inputs()] == ["image"]  # constants inside the graph
    keras_predictor = serving.KerasPredictor(small_model)
    images = real_images()
    exported, reference = onnx_predictor.forward(images), keras_predictor.forward(images)
    np.testing.assert_allclose(exported.probabilities, reference.probabilities, atol=1e-5)
    np.testing.assert_allclose(exported.pooled, reference.pooled, atol=1e-5, rtol=1e-5)
    for image, a, b in zip(images, serving.analyse(onnx_predictor, None, [imaging.load_decoded(p) for p in REAL]),
                           serving.analyse(keras_predictor, None, [imaging.load_decoded(p) for p in REAL]),
                           strict=True):
        assert a.heatmaps.shape == (14, *image.shape)
        np.testing.assert_allclose(a.heatmaps, b.heatmaps, atol=1e-5)


def test_shipped_export_matches_the_shipped_checkpoint():
    onnx_predictor = serving.load_predictor(DEMO / "best.keras")
    assert onnx_predictor.source == "onnx"
    keras_predictor = serving.KerasPredictor(densenet.load(DEMO / "best.keras"))
    decoded = [imaging.load_decoded(path) for path in REAL]
    for a, b in zip(serving.analyse(onnx_predictor, None, decoded), serving.analyse(keras_predictor, None, decoded),
                    strict=True):
        np.testing.assert_allclose(a.probabilities, b.probabilities, atol=1e-5)
        np.testing.assert_allclose(a.heatmaps, b.heatmaps, atol=1e-5)


def test_a_stale_export_is_not_served(run, small_model, tmp_path):
    for name in ("best.keras", "best.onnx", "best.onnx.json"):
        shutil.copy(run / name, tmp_path / name)
    assert serving.load_predictor(tmp_path / "best.keras").source == "onnx"
    small_model.get_layer("predictions").bias.assign(np.full(14, 0.5, np.float32))
    try:
        densenet.save(small_model, tmp_path / "best.keras")  # retrained: the export no longer describes it
    finally:
        small_model.get_layer("predictions").bias.assign(np.zeros(14, np.float32))
    predictor = serving.load_predictor(tmp_path / "best.keras")
    assert predictor.source == "keras" and "stale" in predictor.note and "export" in predictor.note


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m pipeline ARGS`` in a fresh interpreter that also reports whether TensorFlow was imported."""
    script = ("import sys\nfrom pipeline.cli import main\ncode = main(sys.argv[1:])\n"
              "print('tensorflow imported:', 'tensorflow' in sys.modules)\nsys.exit(code)")
    clean = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "CHESTXRAY_VERBOSE")}
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, cwd=REPO,
                          env={**clean, **(env or {})}, timeout=300)


def test_predict_json_serves_the_export_and_flags(run, tmp_path):
    photo = np.zeros((400, 400, 3), np.uint8)
    photo[:, :200] = (0, 180, 0)
    cv2.imwrite(str(tmp_path / "photo.png"), photo)
    photo_path = str(tmp_path / "photo.png")
    result = run_cli("predict", "--checkpoint", str(run / "best.keras"), "--json", str(REAL[0]), photo_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no TensorFlow start-up lines
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "tensorflow imported: False"
    xray, flagged = (json.loads(line) for line in lines[:2])
    assert xray["in_distribution"] is True and xray["typicality"] >= 1 and "ood_reason" not in xray
    assert flagged["in_distribution"] is False and "colour image" in flagged["ood_reason"]
    assert set(xray["probabilities"]) == set(flagged["probabilities"]) and len(xray["probabilities"]) == 14


def test_predict_text_marks_flagged_rows_and_overlays_never_collide(run, tmp_path):
    for folder, source in (("a", REAL[0]), ("b", REAL[1])):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "x.png")
    cv2.imwrite(str(tmp_path / "flat.png"), np.full((300, 300), 90, np.uint8))
    images = [str(tmp_path / "a" / "x.png"), str(tmp_path / "b" / "x.png"), str(tmp_path / "flat.png")]
    result = run_cli("predict", "--checkpoint", str(run / "best.keras"), "--gradcam", str(tmp_path / "cams"),
                     "--top", "1", *images)
    assert result.returncode == 0, result.stderr
    assert "OUT OF DISTRIBUTION: a nearly uniform image" in result.stdout
    overlays = sorted(p.name for p in (tmp_path / "cams").iterdir())
    assert len(overlays) == 3 and overlays[0].startswith("a_x_") and overlays[1].startswith("b_x_")


def test_predict_without_export_is_quiet_unless_verbose(small_checkpoint):
    image = str(REAL[0])
    quiet = run_cli("predict", "--checkpoint", str(small_checkpoint), image)
    assert quiet.returncode == 0 and "tensorflow imported: True" in quiet.stdout
    # no TensorFlow start-up lines; only the one line saying the guard runs without its typicality check
    assert quiet.stderr.startswith("warning: only the pixel checks") and quiet.stderr.count("\n") == 1, quiet.stderr
    verbose = run_cli("--verbose", "predict", "--checkpoint", str(small_checkpoint), image)
    assert verbose.returncode == 0 and verbose.stderr != ""
    by_env = run_cli("predict", "--checkpoint", str(small_checkpoint), image, env={"CHESTXRAY_VERBOSE": "1"})
    assert by_env.returncode == 0 and by_env.stderr != ""


def test_evaluate_counts_flagged_images_and_binds_the_export_to_the_evaluation(run, tmp_path):
    from pipeline.cli import main
    from pipeline.evaluation import provenance

    labels = load_labels(NIH / "test.csv").head(6)
    (tmp_path / "images").mkdir()
    for name in labels["Image"]:
        shutil.copy(IMAGES / name, tmp_path / "images" / name)
    inverted = labels["Image"].iloc[0]
    cv2.imwrite(str(tmp_path / "images" / inverted), 255 - cv2.imread(str(IMAGES / inverted), cv2.IMREAD_GRAYSCALE))
    labels.to_csv(tmp_path / "labels.csv", index=False)
    assert main(["evaluate", "--checkpoint", str(run / "best.keras"), "--labels", str(tmp_path / "labels.csv"),
                 "--images", str(tmp_path / "images"), "--out", str(tmp_path / "eval"), "--bootstrap", "0"]) == 0
    notes = json.loads((tmp_path / "eval" / "metrics.json").read_text())["notes"]
    assert any(note.startswith("1 of 6 images flagged out of distribution") and inverted in note for note in notes)
    # the export serves the weights evaluated, so the evaluation's thresholds hold for it; another export's do not
    assert provenance.match(tmp_path / "eval", run / "best.onnx").binding is provenance.Binding.SAME_WEIGHTS
    info = json.loads((run / "best.onnx.json").read_text())
    (tmp_path / "other.onnx.json").write_text(json.dumps({**info, "checkpoint_sha256": "0" * 64}))
    other = provenance.match(tmp_path / "eval", tmp_path / "other.onnx")
    assert not other.ok and "evaluated other weights than those now in other.onnx" in other.note


def test_png_and_8bit_dicom_of_the_same_pixels_predict_the_same(tmp_path):
    from dicom_files import dicom_bytes

    pixels = imaging.load_image(IMAGES / "00000002_000.png")
    pixels = (pixels // 2 + 60).astype(np.uint8)  # not spanning 0-255, as most 8-bit exports
    cv2.imwrite(str(tmp_path / "x.png"), pixels)
    (tmp_path / "x.dcm").write_bytes(dicom_bytes(pixels))
    predictor = serving.load_predictor(DEMO / "best.keras")
    decoded = [imaging.load_decoded(tmp_path / name) for name in ("x.png", "x.dcm")]
    np.testing.assert_array_equal(decoded[0], decoded[1])
    png, dcm = serving.analyse(predictor, None, decoded)
    np.testing.assert_allclose(png.probabilities, dcm.probabilities, atol=1e-5)
    np.testing.assert_allclose(png.heatmaps, dcm.heatmaps, atol=1e-5)


def test_export_command_adds_both_files_to_a_run(small_model, tmp_path, capsys):
    from pipeline.cli import main

    labels = {part: load_labels(NIH / f"{part}.csv") for part in ("train-small", "valid-small")}
    labels["train-small"].head(12).to_csv(tmp_path / "train.csv", index=False)
    labels["valid-small"].head(5).to_csv(tmp_path / "valid.csv", index=False)
    argv = ["export", "--run", str(tmp_path / "run"), "--train", str(tmp_path / "train.csv"),
            "--valid", str(tmp_path / "valid.csv"), "--images", str(IMAGES)]
    assert main(argv) == 2  # no checkpoint yet: one line, no traceback
    assert "checkpoint not found" in capsys.readouterr().err
    densenet.save(small_model, tmp_path / "run" / "best.keras")
    from pipeline.core.files import sha256_of

    config = {"train": "train.csv", "valid": "valid.csv", "train_sha256": sha256_of(tmp_path / "train.csv"),
              "valid_sha256": sha256_of(tmp_path / "valid.csv")}
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    labels["train-small"].head(40).to_csv(tmp_path / "other.csv", index=False)  # another run's training labels
    other = [str(tmp_path / "other.csv") if a == str(tmp_path / "train.csv") else a for a in argv]
    assert main(other) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: export: these training labels differ") and err.count("\n") == 1
    assert "train.csv" in err and not (tmp_path / "run" / "best.onnx").exists()
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""  # the run's own labels: checked, nothing to say
    summary = json.loads(captured.out)
    assert summary["train_images"] == 12 and summary["valid_pass_rate"] == 1.0
    assert {p.name for p in (tmp_path / "run").iterdir()} >= {"best.onnx", "best.onnx.json", ood.STATS_FILE,
                                                              ood.INFO_FILE}


# --- a damaged or tampered export (issue 20, items 2, 7, 8) --------------------------------------------------------


def copy_run(run, folder):
    folder.mkdir(exist_ok=True)
    for name in ("best.keras", "best.onnx", "best.onnx.json", ood.STATS_FILE, ood.INFO_FILE):
        shutil.copy(run / name, folder / name)
    return folder


def largest_weights(path):
    """The raw bytes of the export's largest weight tensor, and where they start in the file."""
    import onnx

    proto = onnx.load(str(path))
    tensor = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    content = path.read_bytes()
    offset = content.find(tensor.raw_data)
    assert offset > 0 and content.count(tensor.raw_data) == 1
    return proto, tensor, offset


def nan_export(folder):
    """Overwrite bytes inside the largest weight tensor with NaN (same file size, still a valid model)."""
    path = folder / "best.onnx"
    _, tensor, offset = largest_weights(path)
    content = bytearray(path.read_bytes())
    size = len(content)
    middle = offset + len(tensor.raw_data) // 2 // 4 * 4
    content[middle : middle + 4096] = b"\xff" * 4096  # float32 NaN
    path.write_bytes(bytes(content))
    assert path.stat().st_size == size


def assert_refused(result, *words):
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "nan" not in result.stdout.lower()
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in errors[0], errors[0]


def test_a_tampered_export_is_refused_never_served(run, tmp_path):
    folder = copy_run(run, tmp_path / "run")
    nan_export(folder)
    result = run_cli("predict", "--checkpoint", str(folder / "best.keras"), "--json", str(REAL[0]))
    assert_refused(result, "best.onnx", "SHA-256")


def test_a_negated_weight_tensor_is_refused(run, tmp_path):
    import onnx

    folder = copy_run(run, tmp_path / "run")
    proto, tensor, _ = largest_weights(folder / "best.onnx")
    values = onnx.numpy_helper.to_array(tensor)
    tensor.CopyFrom(onnx.numpy_helper.from_array(-values, tensor.name))
    onnx.save(proto, str(folder / "best.onnx"))
    with pytest.raises(serving.InputError, match="SHA-256"):
        serving.load_predictor(folder / "best.keras")


def test_non_finite_outputs_are_never_printed_nor_judged_in_distribution(run, tmp_path):
    folder = copy_run(run, tmp_path / "run")
    nan_export(folder)
    info = json.loads((folder / "best.onnx.json").read_text())  # as if the hash had been recorded after the damage
    info["model_sha256"] = serving.sha256_of(folder / "best.onnx")
    (folder / "best.onnx.json").write_text(json.dumps(info))
    for flags in (["--json"], []):
        result = run_cli("predict", "--checkpoint", str(folder / "best.keras"), *flags, str(REAL[0]))
        assert_refused(result, "non-finite")
    decoded = imaging.load_decoded(REAL[0])
    stats = ood.load(run)
    pooled = np.full((1, stats.mean.shape[0]), np.nan)
    verdict = ood.judge(decoded, imaging.to_gray(decoded), pooled, stats)
    assert not verdict.in_distribution and verdict.typicality is None and "not finite" in verdict.reason


def test_stale_export_says_so_and_still_answers(run, small_model, tmp_path):
    folder = copy_run(run, tmp_path / "run")
    small_model.get_layer("predictions").bias.assign(np.full(14, 0.5, np.float32))
    try:
        densenet.save(small_model, folder / "best.keras")
    finally:
        small_model.get_layer("predictions").bias.assign(np.zeros(14, np.float32))
    result = run_cli("predict", "--checkpoint", str(folder / "best.keras"), "--json", str(REAL[0]))
    assert result.returncode == 0, result.stderr
    warnings = result.stderr.splitlines()
    assert any("stale" in line and "TensorFlow" in line for line in warnings), result.stderr
    assert any("only the pixel checks" in line and "other weights" in line for line in warnings), result.stderr
    assert json.loads(result.stdout.splitlines()[0])["typicality"] is None


@pytest.mark.parametrize(("threshold", "words"), [(None, "threshold None"), (1e300, "threshold 1e+300"),
                                                  ("12", "threshold '12'"), (-1.0, "threshold -1.0")])
def test_implausible_typicality_thresholds_are_refused_naming_the_json(run, tmp_path, threshold, words):
    folder = copy_run(run, tmp_path / "run")
    info = json.loads((folder / ood.INFO_FILE).read_text())
    info["threshold"] = threshold
    (folder / ood.INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(serving.InputError) as caught:
        ood.load(folder)
    message = str(caught.value)
    assert message.startswith(str(folder / ood.INFO_FILE)) and words in message and "\n" not in message


def test_a_hand_edited_threshold_within_range_is_caught_by_the_arrays(run, tmp_path):
    folder = copy_run(run, tmp_path / "run")
    info = json.loads((folder / ood.INFO_FILE).read_text())
    info["threshold"] = info["threshold"] * 10
    (folder / ood.INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(serving.InputError, match="differs from"):
        ood.load(folder)
    (folder / ood.INFO_FILE).write_text("{not json")
    with pytest.raises(serving.InputError, match=ood.INFO_FILE):
        ood.load(folder)


def test_onnx_runtime_writes_no_telemetry(run, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("ORT_DISABLE_TELEMETRY", "XDG_CACHE_HOME")}
    script = ("import sys\nfrom pipeline.cli import main\nsys.exit(main(sys.argv[1:]))")
    result = subprocess.run([sys.executable, "-c", script, "predict", "--checkpoint", str(run / "best.keras"),
                             str(REAL[0])], capture_output=True, text=True, cwd=REPO, env={**env, "HOME": str(home)},
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert list(home.rglob("*")) == []


def test_overlays_of_a_large_image_are_bounded(run, tmp_path):
    from pipeline.explain import gradcam

    big = cv2.resize(imaging.load_image(REAL[0]), (3000, 2600), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "big.png"), big)
    result = run_cli("predict", "--checkpoint", str(run / "best.keras"), "--json", "--gradcam", str(tmp_path / "cams"),
                     "--top", "2", str(tmp_path / "big.png"))
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout.splitlines()[0])["gradcam"]
    shapes = {cv2.imread(path).shape for path in written.values()}
    assert shapes == {(round(2600 * gradcam.OVERLAY_SIDE / 3000), gradcam.OVERLAY_SIDE, 3)}


def test_predict_refuses_a_fifo_in_one_line_and_answers_the_rest(run, tmp_path):
    fifo = tmp_path / "scan.png"
    os.mkfifo(fifo)
    result = run_cli("predict", "--checkpoint", str(run / "best.keras"), "--json", str(fifo), str(REAL[0]))
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "scan.png" in errors[0] and "FIFO" in errors[0]
    assert json.loads(result.stdout.splitlines()[0])["image"] == str(REAL[0])
