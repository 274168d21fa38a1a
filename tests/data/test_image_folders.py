"""The dashboard's image folders: embedded or $CHESTXRAY_IMAGES, listed without decoding, thumbnails on demand."""

from __future__ import annotations

import os

import numpy as np
import pytest
from conftest import NIH

from pipeline.core.errors import InputError
from pipeline.data import boxes, image_folders


def test_embedded_folders_hold_the_sample_and_the_boxed_images(monkeypatch):
    monkeypatch.delenv(image_folders.ENV_VAR, raising=False)
    listed = image_folders.list_images(image_folders.image_folders())
    assert len(listed) == 555 and not image_folders.is_custom()
    assert listed["00009745_000.png"] == str(NIH / "boxed" / "00009745_000.png")
    assert list(listed) == sorted(listed)


def test_environment_folder_and_its_refusal(tmp_path, monkeypatch):
    os.symlink(NIH / "boxed" / "00009745_000.png", tmp_path / "00009745_000.png")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / ".hidden.png").write_bytes(b"")
    monkeypatch.setenv(image_folders.ENV_VAR, str(tmp_path))
    assert image_folders.is_custom() and image_folders.image_folders() == (tmp_path,)
    assert list(image_folders.list_images(image_folders.image_folders())) == ["00009745_000.png"]
    monkeypatch.setenv(image_folders.ENV_VAR, str(tmp_path / "missing"))
    with pytest.raises(InputError, match="not a folder"):
        image_folders.image_folders()


def test_thumbnail_keeps_small_images_and_shrinks_big_ones():
    big = image_folders.thumbnail(NIH / "boxed" / "00009745_000.png", side=256)
    assert big.shape == (256, 256) and big.dtype == np.uint8
    small = image_folders.thumbnail(NIH / "images" / "00000001_000.png", side=512)
    assert small.shape == (320, 320)  # never enlarged


def test_boxes_are_drawn_at_the_images_scale():
    box_list = boxes.load_boxes()
    gray = np.zeros((256, 256), np.uint8)
    drawn = image_folders.with_boxes(gray, "00009745_000.png", box_list)  # Cardiomegaly, x 329 y 400 of 1024
    x, y = round(329.41 / 4), round(399.85 / 4)
    assert tuple(drawn[y, x + 20]) == boxes.COLORS["Cardiomegaly"]  # the top edge, scaled by 256 / 1024
    assert (image_folders.with_boxes(gray, "not-boxed.png", box_list) == 0).all()


def test_a_fifo_in_the_folder_is_skipped_and_listed_never_opened(tmp_path, monkeypatch):
    os.symlink(NIH / "boxed" / "00009745_000.png", tmp_path / "00009745_000.png")
    os.mkfifo(tmp_path / "00000001_000.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    listed = image_folders.list_images([tmp_path])
    assert list(listed) == ["00009745_000.png"]
    assert listed.skipped == ["00000001_000.png", "dangling.png"]
    with pytest.raises(InputError, match="FIFO"):  # even if a page asks for it by name, it is refused at once
        image_folders.thumbnail(tmp_path / "00000001_000.png")
