"""`pipeline.core.files`: a failed write leaves the old file whole and no temporary behind."""

from __future__ import annotations

import hashlib
import math
import stat

import pandas as pd
import pytest

from pipeline.core import files
from pipeline.core.errors import InputError


def test_a_write_that_fails_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    files.write_json_atomic({"auc": 0.8}, target)

    def half(handle):
        handle.write('{"auc": ')
        raise RuntimeError("disk gone")

    with pytest.raises(RuntimeError):
        files.write_atomic(target, half)
    assert target.read_text() == '{\n  "auc": 0.8\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_json_refuses_nan_and_keeps_the_old_file(tmp_path):
    target = files.write_json_atomic({"auc": 0.8}, tmp_path / "a.json")
    with pytest.raises(ValueError):
        files.write_json_atomic({"auc": math.nan}, target)
    assert files.read_json_object(target, "fix it") == {"auc": 0.8}


def test_written_files_are_readable_by_others_and_folders_are_made(tmp_path):
    path = files.write_text_atomic("x", tmp_path / "deep" / "er" / "a.txt")
    assert stat.S_IMODE(path.stat().st_mode) == files.FILE_MODE
    files.write_bytes_atomic(b"\x89PNG", tmp_path / "b.png")
    assert (tmp_path / "b.png").read_bytes() == b"\x89PNG"
    files.write_csv_atomic(pd.DataFrame({"Image": ["a.png"], "p": [0.5]}), tmp_path / "c.csv")
    assert (tmp_path / "c.csv").read_text() == "Image,p\na.png,0.5\n"


def test_sha256_matches_hashlib(tmp_path):
    path = files.write_bytes_atomic(b"chest" * 1000, tmp_path / "a.bin")
    assert files.sha256_of(path) == hashlib.sha256(b"chest" * 1000).hexdigest()
    assert files.sha256_cached(path) == files.sha256_of(path)
    files.write_bytes_atomic(b"other" * 1000, path)  # other weights under the same name, same size
    assert files.sha256_cached(path) == hashlib.sha256(b"other" * 1000).hexdigest()


@pytest.mark.parametrize(
    ("content", "words"), [("{", "not valid JSON"), ("[1, 2]", "expected a JSON object, got list")]
)
def test_read_json_object_says_what_is_wrong_and_the_fix(tmp_path, content, words):
    path = tmp_path / "config.json"
    path.write_text(content)
    with pytest.raises(InputError, match=f"{words}.*; delete it$"):
        files.read_json_object(path, "delete it")


def test_output_folder_over_a_file_is_one_line(tmp_path):
    (tmp_path / "taken").write_text("")
    with pytest.raises(InputError, match="cannot create the output folder"):
        files.output_folder(tmp_path / "taken" / "out")
