"""The tutorial travels with the package: a wheel (not an editable install) holds the notebooks and the shipped
studies, and `poisondiff tutorial --only 00` runs from it outside the repository."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from poisondiff_lite import notebook_files

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    return next(out.glob("poisondiff_lite-*.whl"))


def test_the_wheel_holds_the_notebooks_and_the_shipped_studies(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert sorted(n.split("/")[-1] for n in names if n.startswith("poisondiff_lite/tutorial/")) == NOTEBOOKS
    assert any(n.startswith("poisondiff_lite/shipped/") and n.endswith(".jsonl") for n in names)


@pytest.mark.slow
def test_tutorial_runs_from_the_installed_copy_outside_the_checkout(wheel, tmp_path, data_root):
    site = tmp_path / "site-packages"
    zipfile.ZipFile(wheel).extractall(site)  # what pip install puts in site-packages
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "POISONDIFF_RESULTS"}
    env.update(PYTHONPATH=str(site), POISONDIFF_DATA=str(data_root))  # the kernel imports the installed copy too
    probe = "import poisondiff_lite.notebook_files as f; print(f.tutorial_folder())"
    where = subprocess.run([sys.executable, "-c", probe], cwd=work, env=env, capture_output=True, text=True)
    assert where.stdout.strip() == str(site / "poisondiff_lite" / "tutorial"), where.stderr
    done = subprocess.run(
        [sys.executable, "-m", "poisondiff_lite.cli", "tutorial", "--only", "00", "--no-progress"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    executed = work / "build" / "notebooks" / "00_setup_and_data.ipynb"  # project_root() is the working folder
    assert executed.exists() and "exercise 00.1: no answer yet" in executed.read_text()
    assert not list((site / "poisondiff_lite" / "tutorial").glob("*.ipynb.*")), "nothing written into the package"


def test_the_checkout_runs_its_own_notebooks():
    assert notebook_files.tutorial_folder() == ROOT / "notebooks"
    assert not notebook_files.is_packaged(ROOT / "notebooks")
