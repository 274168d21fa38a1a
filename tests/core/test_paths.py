"""`pipeline.core.paths`: the embedded data found in the checkout, moved by environment variables."""

from __future__ import annotations

from conftest import NIH, REPO

from pipeline.core import paths


def test_defaults_are_the_checkout(monkeypatch):
    monkeypatch.delenv(paths.NIH_ENV, raising=False)
    monkeypatch.delenv(paths.ARTIFACTS_ENV, raising=False)
    assert paths.REPO_ROOT == REPO
    assert paths.nih_dir() == NIH and paths.artifacts_dir() == paths.default_artifacts_dir() == REPO / "artifacts"
    for path in (paths.metadata_file(), paths.train_val_list(), paths.test_list(), paths.box_list(),
                 paths.expert_labels_file(), paths.sample_labels(), paths.label_file("test.csv")):
        assert path.is_file(), path
    assert (NIH / "metadata").resolve() == paths.METADATA_DIR  # the checkout's nih/metadata is the package's
    assert len(list(paths.images_dir().glob("*.png"))) == 549


def test_environment_moves_them(monkeypatch, tmp_path):
    monkeypatch.setenv(paths.NIH_ENV, str(tmp_path / "nih"))
    monkeypatch.setenv(paths.ARTIFACTS_ENV, str(tmp_path / "artifacts"))
    assert paths.artifacts_dir() == tmp_path / "artifacts"
    assert paths.metadata_file() == REPO / "pipeline" / "metadata" / "Data_Entry_2017_v2020.csv.gz"  # package data
    assert paths.images_dir() == tmp_path / "nih" / "images"
    monkeypatch.setenv(paths.ARTIFACTS_ENV, "")  # empty counts as unset
    assert paths.artifacts_dir() == REPO / "artifacts"


def test_shorten(tmp_path):
    assert paths.shorten(REPO / "nih" / "test.csv") == "nih/test.csv"
    assert paths.shorten("nih/test.csv") == "nih/test.csv"  # relative paths are taken from the repository root
    assert paths.shorten(tmp_path / "runs" / "a" / "eval-test", tmp_path) == "runs/a/eval-test"
    assert paths.shorten(tmp_path / "elsewhere", REPO) == str(tmp_path / "elsewhere")
