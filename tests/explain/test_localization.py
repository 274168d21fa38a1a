"""Localization scores: exact on synthetic maps, a leave-one-out baseline, and a real run on the boxed NIH images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import NIH

from pipeline.cli import main
from pipeline.core.errors import InputError
from pipeline.data import boxes
from pipeline.explain import localization, localization_folder
from pipeline.explain.localization import Box

BOXED = NIH / "boxed"


def test_pointing_game_hits_inside_and_within_the_tolerance_only():
    heatmap = np.zeros((100, 100))
    heatmap[50, 30] = 1.0  # peak at pixel centre (30.5, 50.5)
    assert localization.peak(heatmap) == (30.5, 50.5)
    inside = Box(20, 40, 20, 20)
    assert localization.score_box(heatmap, inside, tolerance=0)["pointing"] == 1.0
    left_of_peak = Box(0, 40, 25, 20)  # right edge at x = 25, the peak 5.5 px further right
    assert localization.score_box(heatmap, left_of_peak, tolerance=5)["pointing"] == 0.0
    assert localization.score_box(heatmap, left_of_peak, tolerance=6)["pointing"] == 1.0
    blank = np.zeros((100, 100))  # points nowhere
    assert localization.score_box(blank, inside, tolerance=50)["pointing"] == 0.0
    plateau = np.zeros((100, 100))
    plateau[10, 10] = plateau[10, 30] = 1.0  # tied maxima: their centroid (20.5, 10.5)
    assert localization.peak(plateau) == (20.5, 10.5)


def test_mass_share_and_iou_are_exact():
    heatmap = np.zeros((10, 10))
    heatmap[0:2, 0:2] = 1.0  # mass 4 at value 1
    heatmap[5:7, 5:7] = 0.5  # mass 2 at value 0.5
    box = Box(0, 0, 2, 2)  # exactly the 2 x 2 top-left pixels
    assert localization.box_mask(box, (10, 10)).sum() == 4
    scores = localization.score_box(heatmap, box, tolerance=0)
    assert scores["mass_share"] == pytest.approx(4 / 6)
    assert scores["pointing"] == 1.0
    assert scores["iou_0.75"] == pytest.approx(1.0)  # region >= 0.75: the 4 box pixels only
    assert scores["iou_0.5"] == pytest.approx(4 / 8)  # region >= 0.5: both squares, 8 pixels
    assert scores["iou_0.25"] == pytest.approx(4 / 8)
    wide = Box(0, 0, 4, 2)  # 8 pixels, 4 of them in the map's top square
    assert localization.score_box(heatmap, wide, tolerance=0)["iou_0.75"] == pytest.approx(4 / 8)


def test_score_image_scales_boxes_from_the_1024_original():
    one = pd.DataFrame([{"Image": "a.png", "Finding": "Mass", "x": 512.0, "y": 512.0, "w": 256.0, "h": 256.0}])
    heatmap = np.zeros((64, 64))
    heatmap[40, 40] = 1.0  # inside the box scaled to 64 px: x, y in [32, 48]
    row = localization.score_image({"Mass": heatmap}, one, (64, 64)).iloc[0]
    assert row["model_pointing"] == 1.0 and row["model_mass_share"] == 1.0
    bigger = localization.score_image({"Mass": heatmap}, one, (128, 128)).iloc[0]  # the map is resized to the frame
    assert bigger["model_pointing"] == 1.0


def test_baseline_is_the_mean_of_the_other_images_boxes():
    box_list = pd.DataFrame([
        {"Image": "a.png", "Finding": "Mass", "x": 0.0, "y": 0.0, "w": 4.0, "h": 4.0},
        {"Image": "b.png", "Finding": "Mass", "x": 0.0, "y": 0.0, "w": 2.0, "h": 2.0},
        {"Image": "c.png", "Finding": "Mass", "x": 6.0, "y": 6.0, "w": 2.0, "h": 2.0},
        {"Image": "c.png", "Finding": "Nodule", "x": 6.0, "y": 6.0, "w": 2.0, "h": 2.0},
    ])
    priors = localization.PriorMaps(box_list, side=8)
    prior_a = priors.prior("a.png", "Mass", (8, 8))  # from b and c only: their masks, averaged, scaled to max 1
    expected = np.zeros((8, 8))
    expected[0:2, 0:2] += 1
    expected[6:8, 6:8] += 1
    np.testing.assert_allclose(prior_a, expected)
    prior_b = priors.prior("b.png", "Mass", (8, 8))  # a's 4 x 4 and c's 2 x 2: a never sees itself
    assert prior_b[3, 3] == 1.0 and prior_b[7, 7] == 1.0 and prior_b[4, 4] == 0.0
    assert priors.prior("c.png", "Nodule", (8, 8)) is None  # no other image has a Nodule box
    assert priors.prior("a.png", "Hernia", (8, 8)) is None


def test_summary_intervals_resample_images():
    per_box = pd.DataFrame({
        "Image": ["a", "a", "b", "c"], "Finding": ["Mass", "Nodule", "Mass", "Mass"],
        "model_pointing": [1.0, 0.0, 1.0, 0.0], "baseline_pointing": [0.0, 0.0, 1.0, np.nan],
        **{f"{s}_{k}": [0.5] * 4 for s in ("model", "baseline") for k in localization.SCORES if k != "pointing"},
    })
    result = localization.summarize(per_box, n_bootstrap=200, seed=0)
    mass = result["Mass"]
    assert (mass["n_boxes"], mass["n_images"]) == (3, 3)
    assert mass["model"]["pointing"]["mean"] == pytest.approx(2 / 3)
    assert mass["baseline"]["pointing"]["mean"] == pytest.approx(0.5)  # c has no baseline: left out
    low, high = mass["model"]["pointing"]["ci"]
    assert 0 <= low < 2 / 3 < high <= 1
    assert result["Nodule"]["model"]["pointing"]["ci"] is None  # one image: no interval
    assert result["overall"]["n_boxes"] == 4 and result["overall"]["model"]["pointing"]["mean"] == 0.5


def test_boxes_outside_the_frame_are_listed_and_skipped():
    box_list = pd.DataFrame([
        {"Image": "a.png", "Finding": "Mass", "x": 10.0, "y": 10.0, "w": 20.0, "h": 20.0},
        {"Image": "b.png", "Finding": "Mass", "x": 1000.0, "y": 10.0, "w": 50.0, "h": 20.0},
        {"Image": "c.png", "Finding": "Mass", "x": 10.0, "y": 10.0, "w": 0.0, "h": 20.0},
    ])
    usable, skipped = localization.check_boxes(box_list)
    assert list(usable["Image"]) == ["a.png"]
    assert [s["image"] for s in skipped] == ["b.png", "c.png"] and "outside" in skipped[0]["reason"]


@pytest.fixture(scope="module")
def boxed_run(small_checkpoint, tmp_path_factory):
    """`python -m pipeline localize` of the small real model on the 6 embedded boxed images."""
    out = tmp_path_factory.mktemp("localize") / "result"
    code = main(["localize", "--checkpoint", str(small_checkpoint), "--images", str(BOXED), "--out", str(out),
                 "--bootstrap", "100"])
    assert code == 0
    return out


def test_real_run_on_the_boxed_images_writes_a_complete_result(boxed_run):
    result = localization_folder.read_localization(boxed_run)
    summary, per_box = result.summary, result.per_box
    assert result.score_names() == list(localization.SCORES)
    assert summary["n_images"] == 6 and summary["n_boxes"] == 6 and summary["skipped"] == []
    assert summary["tolerance_px_original"] == 15.0 and summary["boxes_sha256"]
    assert set(summary["results"]) == {"Atelectasis", "Cardiomegaly", "Infiltration", "Mass", "Nodule", "Pneumonia",
                                       "overall"}
    overall = summary["results"]["overall"]
    for source in ("model", "baseline", "difference"):
        for score in localization.SCORES:
            value = overall[source][score]
            assert value["mean"] is not None and value["ci"] is not None
            assert value["ci"][0] <= value["mean"] + 1e-9 and value["mean"] - 1e-9 <= value["ci"][1]
    assert sorted(per_box["Image"]) == sorted(p.name for p in BOXED.glob("*.png"))
    assert per_box[[f"model_{s}" for s in localization.SCORES]].stack().between(0, 1).all()
    assert (per_box[["width", "height"]] == 1024).all().all()
    # the baseline knows no image, so it does not depend on the model: recomputed here from the box list alone
    box_list = boxes.load_boxes()
    priors = localization.PriorMaps(box_list)
    cardio = per_box[per_box["Finding"] == "Cardiomegaly"].iloc[0]
    rows = boxes.boxes_for(box_list, [cardio["Image"]])
    expected = localization.score_image({"Cardiomegaly": np.zeros((4, 4))}, rows, (1024, 1024), priors).iloc[0]
    assert cardio["baseline_mass_share"] == pytest.approx(expected["baseline_mass_share"])
    assert [p.name for p in result.gallery_files] == sorted(
        localization_folder.gallery_name(i, f) for i, f in zip(per_box["Image"], per_box["Finding"], strict=True))
    assert not list(boxed_run.glob(".*.tmp"))


def test_images_at_another_size_are_scored_in_their_own_frame(small_checkpoint, tmp_path):
    import cv2

    folder = tmp_path / "small"
    folder.mkdir()
    name = "00009745_000.png"  # Cardiomegaly
    image = cv2.imread(str(BOXED / name), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(folder / name), cv2.resize(image, (256, 256), interpolation=cv2.INTER_AREA))
    out = tmp_path / "out"
    assert main(["localize", "--checkpoint", str(small_checkpoint), "--images", str(folder), "--out", str(out),
                 "--bootstrap", "0", "--json"]) == 0
    result = localization_folder.read_localization(out)
    summary, per_box = result.summary, result.per_box
    assert per_box.loc[0, "width"] == 256 and summary["n_images"] == 1
    assert summary["results"]["overall"]["model"]["pointing"]["ci"] is None  # no bootstrap asked for


def test_bad_input_gets_one_line_and_exit_2(small_checkpoint, tmp_path, capsys):
    out = str(tmp_path / "out")
    assert main(["localize", "--checkpoint", str(small_checkpoint), "--images", str(tmp_path / "nope"),
                 "--out", out]) == 2
    assert "folder not found" in capsys.readouterr().err
    assert main(["localize", "--checkpoint", str(small_checkpoint), "--images", str(NIH / "images"),
                 "--out", out]) == 2  # the sample has no boxed image
    err = capsys.readouterr().err
    assert "none of the 880 images" in err and len(err.strip().splitlines()) == 1
    unknown = tmp_path / "boxes.csv"
    unknown.write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n00009745_000.png,Tumour,1,2,3,4\n")
    assert main(["localize", "--checkpoint", str(small_checkpoint), "--boxes", str(unknown), "--images", str(BOXED),
                 "--out", out]) == 2
    assert "unknown finding 'Tumour'" in capsys.readouterr().err


def test_unreadable_images_and_outside_boxes_are_skipped_and_the_rest_go_on(small_checkpoint, tmp_path, capsys):
    folder = tmp_path / "images"
    shutil.copytree(BOXED, folder)
    (folder / "00004296_000.png").write_bytes(b"not a png")
    box_file = tmp_path / "boxes.csv"
    box_file.write_text(
        "Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
        "00004296_000.png,Atelectasis,700,750,120,90\n"
        "00009745_000.png,Cardiomegaly,330,400,456,382\n"
        "00013911_000.png,Nodule,1000,400,85,100\n"  # reaches past the 1024 px frame
        "00015649_000.png,Mass,600,300,85,75\n"
    )
    out = tmp_path / "out"
    assert main(["localize", "--checkpoint", str(small_checkpoint), "--boxes", str(box_file), "--images", str(folder),
                 "--out", str(out), "--bootstrap", "50"]) == 0
    summary = json.loads((out / "localization.json").read_text())
    assert summary["n_images"] == 2
    reasons = {item["image"]: item["reason"] for item in summary["skipped"]}
    assert set(reasons) == {"00004296_000.png", "00013911_000.png"} and "outside" in reasons["00013911_000.png"]
    assert "skipped 00004296_000.png" in capsys.readouterr().out


def test_a_broken_result_folder_is_refused(tmp_path):
    (tmp_path / "localization.json").write_text("{")
    with pytest.raises(InputError, match="not a complete localization result"):
        localization_folder.read_localization(tmp_path)
    (tmp_path / "localization-boxes.csv").write_text("Image,Finding\n")
    (tmp_path / "localization.json").write_text("[]")
    with pytest.raises(InputError, match="not a result written by `localize`"):
        localization_folder.read_localization(tmp_path)


def test_a_negative_bootstrap_gets_the_one_rule_before_the_model_loads(tmp_path, capsys):
    """`localize` and `evaluate --reference` check `--bootstrap` with the library's rule, worded once."""
    missing = str(tmp_path / "no.keras")  # never loaded: the rule is checked first
    assert main(["localize", "--checkpoint", missing, "--images", str(BOXED), "--out", str(tmp_path),
                 "--bootstrap", "-1"]) == 2
    localize_err = capsys.readouterr().err
    assert localize_err == "error: --bootstrap must be 0 (no intervals) or more, got -1\n"
    assert main(["evaluate", "--reference", "google2019", "--checkpoint", missing, "--images", str(BOXED),
                 "--labels", str(NIH / "test.csv"), "--out", str(tmp_path), "--bootstrap", "-1"]) == 2
    assert capsys.readouterr().err == localize_err
