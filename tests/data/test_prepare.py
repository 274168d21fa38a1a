"""`prepare` on real NIH images: round trip of pixels and labels, manifest, refusals, resume after SIGKILL, and
hostile cases: a FIFO among the images, a full disk, workers outliving a killed parent, nothing left behind."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import IMAGES, NIH, REPO

from pipeline.core.findings import FINDINGS
from pipeline.data import imaging, label_files, prepare
from pipeline.data import prepared as prepared_format

SIZE = 64


def _run(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipeline", "prepare", *map(str, args)], capture_output=True, text=True, cwd=REPO
    )


def _records(folder: Path) -> list[dict]:
    """Every image of a prepared folder with its labels, read with NumPy directly (not through input_pipeline)."""
    manifest = json.loads((folder / prepared_format.MANIFEST).read_text())
    table = label_files.load_labels(folder / prepared_format.LABELS)
    size = manifest["image_size"]
    images = np.concatenate(
        [np.fromfile(folder / s["file"], np.uint8).reshape(s["images"], size, size) for s in manifest["shards"]]
    )
    assert len(images) == len(table)
    return [
        {"image": image, "labels": row[list(FINDINGS)].tolist(), "name": row["Image"], "patient": row["PatientId"]}
        for image, (_, row) in zip(images, table.iterrows(), strict=True)
    ]


@pytest.fixture(scope="module")
def folder_with_a_corrupt_image(tmp_path_factory) -> tuple[Path, Path]:
    """The 55 test images (as links) plus a truncated PNG, and a label file listing all 56."""
    root = tmp_path_factory.mktemp("images")
    images = root / "images"
    images.mkdir()
    table = label_files.load_labels(NIH / "test.csv")
    for name in table["Image"]:
        (images / name).symlink_to(IMAGES / name)
    corrupt = "99999999_000.png"
    (images / corrupt).write_bytes((IMAGES / table["Image"][0]).read_bytes()[:5000])
    extra = table.iloc[:1].assign(Image=corrupt, PatientId="99999999")
    labels = root / "labels.csv"
    label_files.to_course_format(pd.concat([table, extra], ignore_index=True)).to_csv(labels, index=False)
    return labels, images


@pytest.fixture(scope="module")
def prepared(folder_with_a_corrupt_image, tmp_path_factory) -> Path:
    labels, images = folder_with_a_corrupt_image
    out = tmp_path_factory.mktemp("prepared") / "data"
    result = _run("--labels", labels, "--images", images, "--out", out, "--image-size", SIZE, "--workers", 2)
    assert result.returncode == 0, result.stderr
    assert "55 images at 64 px in 16 shards; 1 refused" in result.stdout
    return out


def test_every_pixel_and_label_round_trips(prepared, folder_with_a_corrupt_image):
    labels, images = folder_with_a_corrupt_image
    expected = label_files.load_labels(labels).set_index("Image")
    records = _records(prepared)
    assert len(records) == 55
    for record in records:
        pixels = imaging.resize(imaging.load_image(images / record["name"]), SIZE)
        np.testing.assert_array_equal(record["image"], pixels)
        assert record["labels"] == expected.loc[record["name"], list(FINDINGS)].tolist()
        assert record["patient"] == expected.loc[record["name"], "PatientId"]
    assert [r["name"] for r in records] == list(expected.index[:55])  # label-file order, the refused one left out


def test_manifest_counts_hashes_and_refusals(prepared):
    manifest = json.loads((prepared / prepared_format.MANIFEST).read_text())
    assert (manifest["n_listed"], manifest["n_images"], manifest["n_refused"]) == (56, 55, 1)
    assert manifest["image_size"] == SIZE and manifest["findings"] == list(FINDINGS)
    assert sum(shard["images"] for shard in manifest["shards"]) == 55 and len(manifest["shards"]) == 16
    for shard in manifest["shards"]:
        assert hashlib.sha256((prepared / shard["file"]).read_bytes()).hexdigest() == shard["sha256"]
    (refused, why), = manifest["refused"].items()
    assert refused == "99999999_000.png" and "truncated" in why and "\n" not in why
    table = label_files.load_labels(prepared / prepared_format.LABELS)
    assert len(table) == 55 and "99999999_000.png" not in set(table["Image"])
    assert manifest["positives"] == {f: int(table[f].sum()) for f in FINDINGS}
    assert manifest["n_patients"] == 55
    assert set(manifest["versions"]) >= {"opencv", "numpy"} and manifest["format_version"] == 2
    assert sorted(p.name for p in prepared.iterdir()) == sorted(
        [prepared_format.MANIFEST, prepared_format.LABELS, *(s["file"] for s in manifest["shards"])]
    )  # no plan, sidecar or temporary file left


def test_run_again_is_a_no_op_and_a_different_preparation_is_refused(prepared, folder_with_a_corrupt_image):
    labels, images = folder_with_a_corrupt_image
    before = {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()}
    again = _run("--labels", labels, "--images", images, "--out", prepared, "--image-size", SIZE)
    assert again.returncode == 0 and "already prepared" in again.stdout
    assert {p.name: p.stat().st_mtime_ns for p in prepared.iterdir()} == before
    other = _run("--labels", labels, "--images", images, "--out", prepared, "--image-size", 32)
    assert other.returncode == 2 and len(other.stderr.strip().splitlines()) == 1
    assert "different preparation" in other.stderr and "image size" in other.stderr


def test_bad_input_gets_one_line_and_exit_2(tmp_path, folder_with_a_corrupt_image):
    labels, images = folder_with_a_corrupt_image
    bad = tmp_path / "bad.csv"
    bad.write_text("Image,Whatever\na.png,1\n")
    cases = [
        (("--labels", bad, "--images", images), "bad.csv"),
        (("--labels", labels, "--images", tmp_path / "nowhere"), "image folder not found"),
    ]
    empty = tmp_path / "empty"
    empty.mkdir()
    cases.append((("--labels", labels, "--images", empty), "none of the 56 images labels.csv lists is in"))
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    cases.append((("--labels", labels, "--images", images, "--out", busy), "not empty"))
    for args, words in cases:
        out = () if "--out" in args else ("--out", tmp_path / f"out-{len(words)}")
        result = _run(*args, *out, "--image-size", SIZE)
        assert result.returncode == 2, result.stdout
        assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
        assert result.stderr.startswith("error: ") and words in result.stderr
        assert "--out" in args or not out[1].exists()  # a refused preparation leaves no folder behind
    assert (busy / "notes.txt").read_text() == "mine"


def test_killed_prepare_continues_to_the_same_shards(prepared, folder_with_a_corrupt_image, tmp_path):
    labels, images = folder_with_a_corrupt_image
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "pipeline", "prepare", "--labels", str(labels), "--images", str(images),
               "--out", str(out), "--image-size", str(SIZE), "--workers", "1"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        while not list(out.glob(".shard-*.json")):  # the first shard is complete
            assert process.poll() is None, "prepare ended before it could be killed"
            assert time.monotonic() < deadline, "prepare wrote no shard in 120 s"
            time.sleep(0.005)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (out / prepared_format.MANIFEST).exists()
    complete = [p.name.removeprefix(".").removesuffix(".json") for p in out.glob(".shard-*.json")]
    kept = {name: (out / name).stat().st_mtime_ns for name in complete}
    assert kept

    result = _run("--labels", labels, "--images", images, "--out", out, "--image-size", SIZE, "--workers", 2)
    assert result.returncode == 0, result.stderr
    assert "already complete, continuing" in result.stdout
    assert {name: (out / name).stat().st_mtime_ns for name in kept} == kept  # complete shards kept, not rewritten
    ours = json.loads((out / prepared_format.MANIFEST).read_text())
    reference = json.loads((prepared / prepared_format.MANIFEST).read_text())
    for a, b in zip(_records(out), _records(prepared), strict=True):
        assert a["name"] == b["name"] and a["patient"] == b["patient"] and a["labels"] == b["labels"], (a, b)
        np.testing.assert_array_equal(a["image"], b["image"])
    assert ours["shards"] == reference["shards"]  # same files, counts and SHA-256 as the uninterrupted run
    assert ours["refused"] == reference["refused"]
    assert (out / prepared_format.LABELS).read_bytes() == (prepared / prepared_format.LABELS).read_bytes()
    assert not list(out.glob(".*"))


def test_workers_never_rerun_the_callers_main_script(tmp_path, monkeypatch):
    """Spawned decoders re-import the parent's main module by default; under a notebook, a script on stdin or
    a Streamlit page (AppTest runs one in the test process) that breaks them. They must not need it."""
    marker = tmp_path / "ran"
    script = tmp_path / "page.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\nraise SystemExit('a page that must not run again')\n")
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__file__", str(script), raising=False)
    monkeypatch.setattr(main, "__spec__", None, raising=False)
    manifest = prepare.prepare(NIH / "valid-small.csv", IMAGES, tmp_path / "out", 32, workers=2, log=lambda s: None)
    assert manifest.n_images == 55 and not marker.exists()
    assert main.__file__ == str(script)  # put back as it was


def _linked_folder(root: Path, count: int) -> tuple[Path, Path, pd.DataFrame]:
    """The first ``count`` test images (links) and a label file listing them."""
    images = root / "images"
    images.mkdir(parents=True)
    table = label_files.load_labels(NIH / "test.csv").head(count)
    for name in table["Image"]:
        (images / name).symlink_to(IMAGES / name)
    labels = root / "labels.csv"
    label_files.to_course_format(table).to_csv(labels, index=False)
    return labels, images, table


def test_a_fifo_among_the_images_is_refused_in_one_line_and_never_blocks(tmp_path):
    labels, images, table = _linked_folder(tmp_path, 20)
    fifo = table["Image"].iloc[3]
    (images / fifo).unlink()
    os.mkfifo(images / fifo)  # nobody ever writes to it: reading it would block forever
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, "-m", "pipeline", "prepare", "--labels", labels, "--images", images, "--out", out,
         "--image-size", str(SIZE), "--workers", "2"],
        capture_output=True, text=True, cwd=REPO, timeout=180,
    )
    assert result.returncode == 0, result.stderr
    manifest = json.loads((out / prepared_format.MANIFEST).read_text())
    assert manifest["n_images"] == 19 and list(manifest["refused"]) == [fifo]
    assert "not a regular file" in manifest["refused"][fifo] and "\n" not in manifest["refused"][fifo]
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no .tmp shard, no sidecar


@pytest.mark.skipif(shutil.which("unshare") is None, reason="needs unshare(1) to mount a small tmpfs")
def test_a_full_disk_ends_in_one_line_exit_2_and_no_temporary_shard(tmp_path):
    """A real 1 MB tmpfs (in a user and mount namespace) as --out: 55 images at 224 px need 2.8 MB."""
    labels, images, _ = _linked_folder(tmp_path, 55)
    disk = tmp_path / "disk"
    disk.mkdir()
    script = (
        f"mount -t tmpfs -o size=1m tmpfs {disk} || exit 77; "
        f"{sys.executable} -m pipeline prepare --labels {labels} --images {images} --out {disk}/out "
        f"--image-size 224 --workers 2; code=$?; ls -A {disk}/out >&2; exit $code"
    )
    result = subprocess.run(["unshare", "-rm", "sh", "-c", script], capture_output=True, text=True, cwd=REPO,
                            timeout=180)
    if result.returncode == 77:
        pytest.skip("this machine does not allow a tmpfs in a user namespace")
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr
    assert lines[0].startswith("error: ") and "the disk is full" in lines[0] and "Traceback" not in result.stderr
    assert "run the same command again" in lines[0]
    left = lines[1:]  # what --out still holds: complete shards to continue from, never a temporary file
    assert not [name for name in left if name.endswith(".tmp")], left


def _descendants(pid: int) -> set[int]:
    found, todo = set(), [pid]
    while todo:
        parent = todo.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(c) for c in (task / "children").read_text().split()}
            except OSError:
                continue
            todo.extend(children - found)
            found |= children
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads process trees from /proc")
def test_no_worker_survives_a_sigkill_of_prepare(tmp_path):
    labels, images, _ = _linked_folder(tmp_path, 55)
    command = [sys.executable, "-m", "pipeline", "prepare", "--labels", str(labels), "--images", str(images),
               "--out", str(tmp_path / "out"), "--image-size", "224", "--workers", "2"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    workers: set[int] = set()
    try:
        while len(workers) < 2:  # decoders (and the resource tracker) started
            assert process.poll() is None, "prepare ended before it could be killed"
            assert time.monotonic() < deadline, "prepare started no worker in 120 s"
            workers = _descendants(process.pid)
            time.sleep(0.01)
        time.sleep(0.3)
        workers |= _descendants(process.pid)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + 10  # a worker looks for its parent every 0.5 s
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    survivors = [pid for pid in workers if _alive(pid)]
    for pid in survivors:
        os.kill(pid, signal.SIGKILL)
    assert not survivors, f"{len(survivors)} of {len(workers)} worker processes outlived prepare by 10 s"


def test_a_preparation_of_unreadable_images_only_leaves_no_folder(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    table = label_files.load_labels(NIH / "test.csv").head(20)
    for name in table["Image"]:
        (images / name).write_bytes(b"not an image at all")
    labels = tmp_path / "labels.csv"
    label_files.to_course_format(table).to_csv(labels, index=False)
    out = tmp_path / "out"
    result = _run("--labels", labels, "--images", images, "--out", out, "--image-size", SIZE, "--workers", 2)
    assert result.returncode == 2 and "none of the 20 listed images could be read" in result.stderr
    assert not out.exists()
