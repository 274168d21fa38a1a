"""`pip install .` ships the NIH metadata inside the package: the installed `chestxray audit` works from any folder.

Builds a wheel from a copy of the package (so the checkout gets no build/ folder), installs it with no
dependencies into a folder of its own, and runs the installed console script elsewhere, with no
$CHESTXRAY_NIH and no checkout on the path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile

from conftest import REPO

METADATA = ["BBox_List_2017.csv.gz", "Data_Entry_2017_v2020.csv.gz", "google2019_nih-chest-xray-labels.csv.gz",
            "test_list.txt.gz", "train_val_list.txt.gz"]


def pip(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--quiet"],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]


def test_the_wheel_holds_the_metadata_and_the_installed_audit_runs_anywhere(tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "pipeline", source / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    pip("wheel", "--no-build-isolation", "--wheel-dir", str(tmp_path / "dist"), str(source))
    wheel = next((tmp_path / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        shipped = sorted(name.removeprefix("pipeline/metadata/") for name in archive.namelist()
                         if name.startswith("pipeline/metadata/"))
    assert shipped == METADATA

    site = tmp_path / "site"
    pip("install", "--target", str(site), str(wheel))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith("CHESTXRAY_")}
    env["PYTHONPATH"] = str(site)
    where = subprocess.run([sys.executable, "-c", "import pipeline; print(pipeline.__file__)"], capture_output=True,
                           text=True, cwd=elsewhere, env=env, timeout=120)
    assert where.stdout.strip() == str(site / "pipeline" / "__init__.py")
    audit = subprocess.run([str(site / "bin" / "chestxray"), "audit"], capture_output=True, text=True,
                           cwd=elsewhere, env=env, timeout=300)
    assert audit.returncode == 0, audit.stderr[-2000:]
    assert "86,524 train / 25,596 test images" in audit.stdout
    assert "patients in both: 0 (0.0% of 2,797 test patients)" in audit.stdout
