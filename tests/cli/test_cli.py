"""The command line: output, exit codes, and one-line errors without tracebacks."""

from __future__ import annotations

import json
import subprocess
import sys

import pandas as pd
from conftest import METADATA, NIH, REPO, run_main

SPLITS = [NIH / "train-small.csv", NIH / "valid-small.csv", NIH / "test.csv"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *map(str, args)], capture_output=True, text=True, cwd=REPO)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str) -> None:
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    for word in words:
        assert word in result.stderr


def test_stats_json_on_full_metadata():
    result = run("stats", "--labels", METADATA, "--json")
    assert result.returncode == 0
    summary = json.loads(result.stdout)
    assert (summary["n_images"], summary["n_patients"]) == (112_120, 30_805)


def test_stats_table():
    result = run("stats", "--labels", NIH / "sample_labels.csv")
    assert result.returncode == 0
    assert "images: 549" in result.stdout and "Infiltration" in result.stdout


def test_leakage_clean_exit_0_one_line():
    result = run("leakage", *SPLITS)
    assert result.returncode == 0
    assert result.stdout.strip().splitlines() == ["no leakage: 3 files, 3 pairs, no patient in more than one file"]


def test_leakage_found_exit_1_with_table(tmp_path):
    leaky = tmp_path / "leaky.csv"
    pd.read_csv(SPLITS[0]).head(7).to_csv(leaky, index=False)
    result = run("leakage", SPLITS[0], SPLITS[2], leaky, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    leaking = [pair for pair in report["pairs"] if pair["leakage"]]
    assert len(leaking) == 1 and leaking[0]["n_patients"] == 7
    table = run("leakage", SPLITS[0], leaky)
    assert table.returncode == 1 and "LEAKAGE" in table.stdout and "7" in table.stdout


def test_leakage_on_full_metadata_against_official_test_list(tmp_path):
    test_names = pd.read_csv(NIH / "metadata" / "test_list.txt.gz", header=None)[0]
    full = pd.read_csv(METADATA)
    test = tmp_path / "official_test.csv"
    full[full["Image Index"].isin(test_names)].to_csv(test, index=False)
    result = run("leakage", METADATA, test)
    assert result.returncode == 1  # the full table contains the test patients, of course
    assert "2797" in result.stdout.replace(",", "")


def test_split_writes_three_disjoint_course_files(tmp_path):
    result = run("split", "--labels", NIH / "sample_labels.csv", "--out", tmp_path, "--seed", "0")
    assert result.returncode == 0, result.stderr
    files = [tmp_path / name for name in ("train.csv", "valid.csv", "test.csv")]
    assert run("leakage", *files).returncode == 0
    assert sum(len(pd.read_csv(f)) for f in files) == 549


def test_split_reproduces_the_committed_files(tmp_path):
    # nih/README.md documents this command; it must still make the committed files
    names = ["train-small.csv", "valid-small.csv", "test.csv"]
    result = run("split", "--labels", NIH / "sample_labels.csv", "--out", tmp_path, "--valid", "0.1", "--test", "0.1",
                 "--seed", "0", "--names", *names)
    assert result.returncode == 0, result.stderr
    for name in names:
        assert (tmp_path / name).read_text() == (NIH / name).read_text()


def test_audit_text():
    result = run("audit")
    assert result.returncode == 0
    assert "patient-disjoint" in result.stdout and "86,524" in result.stdout


def test_errors_are_one_line(tmp_path):
    assert_one_line_error(run("stats", "--labels", tmp_path / "nope.csv"), "nope.csv", "not found")
    bad = tmp_path / "bad.csv"
    pd.read_csv(SPLITS[1]).drop(columns="PatientId").to_csv(bad, index=False)
    assert_one_line_error(run("leakage", SPLITS[0], bad), "bad.csv", "PatientId")
    split = run("split", "--labels", SPLITS[1], "--out", tmp_path, "--valid", "0.9")
    assert_one_line_error(split, "shares", "--valid 0.9")


def test_library_parameters_are_printed_as_flags():
    from pipeline.cli import as_flags

    assert as_flags("`n_bootstrap` must be 0 or more") == "--bootstrap must be 0 or more"
    assert as_flags("`checkpoint` needs `images`, the folder") == "--checkpoint needs --images, the folder"
    assert as_flags("run `python -m pipeline evaluate`") == "run `python -m pipeline evaluate`"  # not a parameter
    assert as_flags("`unknown_name` stays") == "`unknown_name` stays"


def test_model_errors_name_the_train_flags(tmp_path, capsys):
    """A library error raised under `train` (the bad weights file) is printed with the flag that set it."""
    train = ["train", "--train", SPLITS[0], "--valid", SPLITS[1], "--images", NIH / "images", "--out", tmp_path / "r"]
    code, _, err = run_main(capsys, *train, "--weights", tmp_path / "missing.h5", "--image-size", "64", "--epochs", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "--weights" in err and "missing.h5: no such file" in err and "`weights`" not in err


def test_the_library_never_imports_the_command_line():
    """Only pipeline/__main__.py and pipeline/cli/ may import pipeline.cli; the app never does."""
    import ast

    for path in [*(REPO / "pipeline").glob("*.py"), *(REPO / "app").rglob("*.py")]:
        if path.name == "__main__.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                imported = [node.module or "", *(f"{node.module}.{alias.name}" for alias in node.names)]
            else:
                continue
            assert not any(n == "pipeline.cli" or n.startswith("pipeline.cli.") for n in imported), path


def test_help_from_any_folder(tmp_path):
    """`python -m pipeline --help` lists every command, whatever the working folder."""
    result = subprocess.run([sys.executable, "-m", "pipeline", "--help"], capture_output=True, text=True,
                            cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr
    for command in ("stats", "leakage", "split", "audit", "train", "predict", "evaluate", "compare"):
        assert command in result.stdout


def test_split_around_the_official_test_list(tmp_path):
    """`split --test-list`: the official test images exactly, the rest split by patient into train and valid."""
    test_list = NIH / "metadata" / "test_list.txt.gz"
    result = run("split", "--labels", METADATA, "--test-list", test_list, "--valid", "0.1", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    parts = {name: pd.read_csv(tmp_path / f"{name}.csv") for name in ("train", "valid", "test")}
    assert set(parts["test"]["Image"]) == set(pd.read_csv(test_list, header=None)[0])
    assert len(parts["train"]) + len(parts["valid"]) == 86_524
    assert abs(len(parts["valid"]) / 86_524 - 0.1) < 0.01
    assert run("leakage", *(tmp_path / f"{name}.csv" for name in parts)).returncode == 0
    patient = parts["train"]["PatientId"].value_counts().index[0]  # a patient with several images
    one_image = tmp_path / "one.txt"
    one_image.write_text(parts["train"].loc[parts["train"]["PatientId"] == patient, "Image"].iloc[0] + "\n")
    leaky = run("split", "--labels", METADATA, "--test-list", one_image, "--out", tmp_path / "y")
    assert leaky.returncode == 2 and "not patient-wise" in leaky.stderr
    bad = run("split", "--labels", METADATA, "--test-list", tmp_path / "nowhere.txt", "--out", tmp_path / "x")
    assert bad.returncode == 2 and "split list not found" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_a_closed_stdout_ends_quietly():
    """`stats --json | head`: the reader leaves before the output is written; no traceback, nothing on stderr."""
    child = subprocess.Popen([sys.executable, "-m", "pipeline", "stats", "--labels", NIH / "sample_labels.csv",
                              "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    child.stdout.close()  # as `head` does once it has its lines
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 1
    assert err == "", err
