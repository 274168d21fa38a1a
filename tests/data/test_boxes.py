"""The NIH bounding boxes: read as NIH ships them, finding names aligned, scaled and drawn."""

from __future__ import annotations

import gzip

import numpy as np
import pandas as pd
import pytest
from conftest import IMAGES

from pipeline.core.errors import InputError
from pipeline.core.findings import FINDINGS
from pipeline.data import boxes


@pytest.fixture(scope="module")
def nih_boxes():
    return boxes.load_boxes()


def test_nih_box_list_known_truths(nih_boxes):
    assert list(nih_boxes.columns) == boxes.COLUMNS
    assert len(nih_boxes) == 984 and nih_boxes["Image"].nunique() == 880
    counts = nih_boxes["Finding"].value_counts()
    assert counts["Infiltration"] == 123 and "Infiltrate" not in counts  # renamed to the project's spelling
    assert set(counts.index) <= set(FINDINGS) and len(counts) == 8
    assert (nih_boxes[["x", "y"]] >= 0).all().all() and (nih_boxes.x + nih_boxes.w <= 1024).all()


def test_no_embedded_image_has_a_box(nih_boxes):
    """The dashboard says so; this test notices if the embedded sample ever changes."""
    embedded = [p.name for p in IMAGES.glob("*.png")]
    assert len(embedded) == 549
    assert boxes.boxes_for(nih_boxes, embedded).empty


def test_scale_boxes_to_the_displayed_size():
    box = pd.DataFrame([{"Image": "a.png", "Finding": "Mass", "x": 512.0, "y": 256.0, "w": 100.0, "h": 50.0}])
    scaled = boxes.scale_boxes(box, 320)
    assert scaled.loc[0, ["x", "y", "w", "h"]].tolist() == pytest.approx([160, 80, 31.25, 15.625])
    wide = boxes.scale_boxes(box, (512, 256))  # (width, height)
    assert wide.loc[0, ["x", "y", "w", "h"]].tolist() == pytest.approx([256, 64, 50, 12.5])
    assert box.loc[0, "x"] == 512.0  # the input is left alone


def test_draw_boxes_outlines_in_the_findings_colour():
    image = np.zeros((100, 100), np.uint8)
    box = pd.DataFrame([{"Image": "a.png", "Finding": "Mass", "x": 20.0, "y": 30.0, "w": 40.0, "h": 20.0}])
    drawn = boxes.draw_boxes(image, box, thickness=1)
    assert drawn.shape == (100, 100, 3) and drawn.dtype == np.uint8
    assert tuple(drawn[30, 40]) == boxes.COLORS["Mass"]  # top edge
    assert tuple(drawn[40, 40]) == (0, 0, 0)  # inside stays untouched
    assert (boxes.draw_boxes(image, box.iloc[:0]) == 0).all()  # no boxes: the image as RGB


def test_bad_box_files_give_one_line(tmp_path):
    with pytest.raises(InputError, match="not found"):
        boxes.load_boxes(tmp_path / "missing.csv.gz")
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="expected 'Image Index'"):
        boxes.load_boxes(wrong)
    unknown = tmp_path / "unknown.csv.gz"
    with gzip.open(unknown, "wt") as handle:
        handle.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\nx.png,Tumour,1,2,3,4\n")
    with pytest.raises(InputError, match="unknown finding 'Tumour'") as error:
        boxes.load_boxes(unknown)
    assert "\n" not in str(error.value)
