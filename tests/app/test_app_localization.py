"""The dashboard's localization parts in AppTest: the Localization view, boxes on Predict, $CHESTXRAY_IMAGES."""

from __future__ import annotations

import os

import pytest
from conftest import NIH
from test_app import build_artifacts, open_page, start_app, text, widget

from pipeline.cli import main

BOXED = NIH / "boxed"


@pytest.fixture(scope="module")
def artifacts_with_localization(small_model, small_checkpoint, tmp_path_factory):
    """The test artifacts of test_app, plus `localize` of the tiny run on the 6 boxed images."""
    root = build_artifacts(tmp_path_factory.mktemp("artifacts"), small_model)
    out = root / "runs" / "tiny" / "localization-boxed"
    assert main(["localize", "--checkpoint", str(root / "runs" / "tiny" / "best.keras"), "--images", str(BOXED),
                 "--out", str(out), "--bootstrap", "100"]) == 0
    return root


def start(monkeypatch, artifacts, images=None):
    if images is None:
        monkeypatch.delenv("CHESTXRAY_IMAGES", raising=False)
    else:
        monkeypatch.setenv("CHESTXRAY_IMAGES", str(images))
    return start_app(monkeypatch, artifacts)


def test_localization_view_model_against_baseline_with_gallery(artifacts_with_localization, monkeypatch):
    at = open_page(start(monkeypatch, artifacts_with_localization), "performance")
    tabs = [tab.label for tab in at.tabs]
    assert "Localization" in tabs
    body = text(at)
    assert "6 radiologist boxes on 6 images of `nih/boxed`" in body
    assert "all other images of the box list" in body and "15 px" in body
    table = next(d.value for d in at.dataframe if "Baseline (box prior)" in d.value.columns)
    assert list(table["Finding"]) == ["Atelectasis", "Cardiomegaly", "Infiltration", "Mass", "Nodule", "Pneumonia",
                                      "overall"]
    assert table["Boxes"].tolist() == [1, 1, 1, 1, 1, 1, 6]
    overall = table.loc[6, "Baseline (box prior)"]  # "mean [low, high]" over the 6 images
    mean, low, high = (float(x) for x in overall.replace("[", "").replace("]", "").replace(",", "").split())
    assert low <= mean <= high
    assert "[" not in table.loc[0, "Model"]  # one image: no interval
    gallery = [c for image in at.image for c in image.captions]
    assert len(gallery) == 6 and any("00009745_000.png: Cardiomegaly" in c for c in gallery)
    widget(at.radio, "Score").set_value("iou_0.5").run()
    assert not at.exception and "IoU, map thresholded at 0.5" in str(at.get("plotly_chart")[-1].proto.spec)


def test_no_localization_tab_without_a_result(tmp_path, small_model, monkeypatch):
    root = build_artifacts(tmp_path, small_model)
    at = open_page(start(monkeypatch, root), "performance")
    assert "Localization" not in [tab.label for tab in at.tabs]


def test_predict_draws_boxes_and_pointing_results_for_a_boxed_image(artifacts_with_localization, monkeypatch):
    at = open_page(start(monkeypatch, artifacts_with_localization), "predict")
    assert not any(d.value.columns.tolist()[:2] == ["Finding", "Pointing game"] for d in at.dataframe)
    widget(at.selectbox, "Or pick an image").set_value("00009745_000.png").run()
    assert not at.exception and not at.error
    table = next(d.value for d in at.dataframe if "Pointing game" in d.value.columns)
    assert table["Finding"].tolist() == ["Cardiomegaly"] and table["Pointing game"].iloc[0] in ("hit", "miss")
    assert 0 <= table["Mass share in box"].iloc[0] <= 1
    assert "has NIH radiologist boxes" in text(at) and "1024 x 1024 px" in text(at)

    upload = (BOXED / "00015649_000.png").read_bytes()  # an upload is matched by its file name
    at.file_uploader[0].set_value(("00015649_000.png", upload, "image/png")).run()
    table = next(d.value for d in at.dataframe if "Pointing game" in d.value.columns)
    assert table["Finding"].tolist() == ["Mass"]
    at.file_uploader[0].set_value(("renamed.png", upload, "image/png")).run()
    assert not any("Pointing game" in d.value.columns for d in at.dataframe)


def symlink_folder(folder, names):
    folder.mkdir()
    for name in names:
        source = BOXED / name if (BOXED / name).exists() else NIH / "images" / name
        os.symlink(source, folder / name)
    return folder


def test_image_folder_from_the_environment(artifacts_with_localization, tmp_path, monkeypatch):
    """$CHESTXRAY_IMAGES: the gallery, the boxes and Predict's picker use that folder, labels from full metadata."""
    boxed = sorted(p.name for p in BOXED.glob("*.png"))
    sample = sorted(p.name for p in (NIH / "images").glob("*.png"))[:20]
    folder = symlink_folder(tmp_path / "nih-images", [*boxed, *sample])
    at = start(monkeypatch, artifacts_with_localization, folder)
    assert at.sidebar.radio[0].value == "Full NIH metadata"
    captions = "\n".join(c.value for c in at.sidebar.caption)
    assert "26 files in the folder named by `$CHESTXRAY_IMAGES`" in captions
    assert str(folder) not in captions  # never an absolute server path
    open_page(at, "dataset")
    body = text(at)
    assert "26 of the selected images are in the image folder" in body
    assert "6 of the images in the image folder carry some of the NIH's 984 boxes" in body
    widget(at.number_input, "Page (of 4)").set_value(3).run()  # the 20 sample images come first
    captions = [c for image in at.image for c in image.captions]
    assert "00009745_000.png: Cardiomegaly" in captions  # its label from the full metadata
    assert "00009745_000.png: Cardiomegaly box" in captions  # and drawn with its box
    widget(at.selectbox, "Boxes of").set_value("Mass").run()
    assert "00015649_000.png: Mass box" in [c for image in at.image for c in image.captions]

    open_page(at, "predict")
    picker = widget(at.selectbox, "Or pick an image")
    assert sorted(picker.options) == sorted([*boxed, *sample])
    picker.set_value("00013911_000.png").run()
    table = next(d.value for d in at.dataframe if "Pointing game" in d.value.columns)
    assert table["Finding"].tolist() == ["Nodule"]


def test_a_missing_image_folder_is_said_in_one_line(artifacts_with_localization, tmp_path, monkeypatch):
    at = start(monkeypatch, artifacts_with_localization, tmp_path / "nope")
    assert any("not a folder" in c.value for c in at.sidebar.caption)
    for page in ("dataset", "predict"):
        open_page(at, page)
        assert any("not a folder" in e.value for e in at.error), page


def test_embedded_boxed_images_show_their_boxes_on_the_dataset_page(artifacts_with_localization, monkeypatch):
    at = open_page(start(monkeypatch, artifacts_with_localization), "dataset")
    assert "6 of the images in `nih/images` and `nih/boxed` carry some of the NIH's 984 boxes" in text(at)
    assert "00009745_000.png: Cardiomegaly box" in [c for image in at.image for c in image.captions]
    widget(at.selectbox, "Boxes of").set_value("Pneumonia").run()
    assert "00022178_000.png: Pneumonia box" in [c for image in at.image for c in image.captions]
