"""`pipeline.inference.predict` and `python -m pipeline predict` on real NIH images and a saved checkpoint."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from conftest import IMAGES

from pipeline.cli import main
from pipeline.core.findings import FINDINGS
from pipeline.data import imaging
from pipeline.inference.predict import predict_images, predict_paths

GOOD = [IMAGES / "00000001_000.png", IMAGES / "00000002_000.png"]


@pytest.fixture
def corrupt(tmp_path):
    """A real PNG cut after 200 bytes, as an interrupted copy leaves it."""
    path = tmp_path / "truncated.png"
    path.write_bytes(GOOD[0].read_bytes()[:200])
    return path


def test_predict_paths_aligns_rows_with_loaded_paths(small_model, corrupt):
    paths = [GOOD[0], corrupt, GOOD[1], GOOD[0]]
    probabilities, ok, errors = predict_paths(small_model, paths, batch_size=2)
    assert ok == [str(GOOD[0]), str(GOOD[1]), str(GOOD[0])]
    assert list(errors) == [str(corrupt)] and "\n" not in errors[str(corrupt)]
    assert probabilities.shape == (3, len(FINDINGS)) and probabilities.dtype == np.float32
    expected = predict_images(small_model, [imaging.load_image(p) for p in GOOD])
    np.testing.assert_allclose(probabilities, expected[[0, 1, 0]], atol=1e-6)


def test_predict_nothing(small_model):
    assert predict_images(small_model, []).shape == (0, len(FINDINGS))
    assert predict_paths(small_model, []).probabilities.shape == (0, len(FINDINGS))


def test_cli_table_and_gradcam_with_a_corrupt_file(small_checkpoint, corrupt, tmp_path, capsys):
    out = tmp_path / "cams"
    argv = ["predict", "--checkpoint", str(small_checkpoint), str(GOOD[0]), str(corrupt), str(GOOD[1])]
    code = main([*argv, "--gradcam", str(out), "--top", "2"])
    captured = capsys.readouterr()
    assert code == 2
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and str(corrupt) in errors[0]
    # the one other line says that this run (never exported) is guarded by the pixel checks only
    assert captured.err.count("\n") == 2 and "warning: only the pixel checks" in captured.err
    for path in GOOD:  # the good images are still predicted, one row per finding
        assert str(path) in captured.out
    assert all(captured.out.count(f"  {name} ") == 2 for name in FINDINGS)
    written = sorted(out.glob("*.png"))
    assert len(written) == 4 and {p.name.split("_", 2)[0] for p in written} == {"00000001", "00000002"}
    overlay = cv2.imread(str(written[0]))
    assert overlay.shape == (320, 320, 3)


def test_cli_json_lines(small_checkpoint, capsys):
    code = main(["predict", "--checkpoint", str(small_checkpoint), *map(str, GOOD), "--json"])
    lines = capsys.readouterr().out.splitlines()
    assert code == 0 and len(lines) == 2
    records = [json.loads(line) for line in lines]
    assert [r["image"] for r in records] == [str(p) for p in GOOD]
    for record in records:
        assert list(record["probabilities"]) == list(FINDINGS)
        assert all(0 < p < 1 for p in record["probabilities"].values())


def test_cli_missing_checkpoint(tmp_path, capsys):
    code = main(["predict", "--checkpoint", str(tmp_path / "none.keras"), str(GOOD[0])])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
