"""The tutorial in a real JupyterLab and a real browser (Chromium driven by Playwright): Run All without an error,
stderr or "Error displaying widget"; solutions' printed answers stay folded; progress bars render as widgets; the
target explorer's class menu, EPA-rank slider and easiest/hardest buttons change the figure.

They run after the notebooks (their saved runs make 03 and 07 load rather than train). Screenshots go to the test's
temp folder; a failure names them. Without Chromium they skip with the fix (in CI they fail: `.ci/run` installs it).
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import time
from pathlib import Path

import pytest

from browser import BROWSER_FIX, explore_server, find_chromium, lab_server, open_notebook, run_all

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.after_notebooks, pytest.mark.slow]
NOTEBOOKS = ("00_setup_and_data.ipynb", "03_poisoning_distance.ipynb", "07_summary.ipynb")
# what the test process sets for headless kernels, and the kernel audit: a learner's JupyterLab has none of them
HEADLESS_ONLY = ("TQDM_DISABLE", "MPLBACKEND", "IPYTHONDIR", "POISONDIFF_AUDIT_LOG")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    chromium = find_chromium()
    if chromium is None:
        (pytest.fail if os.environ.get("CI") else pytest.skip)(BROWSER_FIX)
    sync_api = pytest.importorskip("playwright.sync_api", reason='Fix: pip install -e ".[test]" (playwright)')
    folder = tmp_path_factory.mktemp("browser")
    served = folder / "notebooks"  # copies: JupyterLab saves what it runs
    served.mkdir()
    for name in NOTEBOOKS:
        shutil.copy(ROOT / "notebooks" / name, served / name)
    # 03 trains its clean runs in a results folder of its own, so its training progress bars show
    notebook = served / NOTEBOOKS[1]
    default = 'RESULTS_DIR: \\"Optional[str]\\" = None'
    assert default in notebook.read_text()
    fresh = str(folder / "fresh-results").replace("\\", "/")
    notebook.write_text(notebook.read_text().replace(default, f'RESULTS_DIR: \\"Optional[str]\\" = \\"{fresh}\\"', 1))
    env = {k: v for k, v in os.environ.items() if k not in HEADLESS_ONLY}
    with lab_server(served, folder / "jupyterlab.log", env, folder / "workspaces") as url:
        with sync_api.sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium)
            try:
                yield {"url": url, "browser": browser, "shots": folder, "env": env}
            finally:
                browser.close()


@contextlib.contextmanager
def page_of(lab, name: str):
    """A fresh page on notebook `name`; on any failure a screenshot is saved and its path added to the message."""
    page = lab["browser"].new_page(viewport={"width": 1400, "height": 1000})
    shot = lab["shots"] / f"{Path(name).stem}.png"
    try:
        open_notebook(page, lab["url"], name)
        yield page
        page.screenshot(path=str(shot), full_page=True)
    except Exception as exc:
        with contextlib.suppress(Exception):
            page.screenshot(path=str(shot), full_page=True)
        pytest.fail(f"{type(exc).__name__}: {exc} (screenshot: {shot})")
    finally:
        page.close()


def assert_clean_run(page, name: str, timeout: float) -> None:
    state = run_all(page, name, timeout)
    assert state["errors"] == [] and state["stderr"] == [], state
    assert page.get_by_text("Error displaying widget").count() == 0
    assert page.locator("details[open]").count() == 0  # solutions' printed answers stay folded after Run All


def wait_until(condition, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} within {timeout:.0f} s")
        time.sleep(0.25)


def test_00_runs_all_in_jupyterlab_with_its_solutions_folded(lab):
    with page_of(lab, NOTEBOOKS[0]) as page:
        assert_clean_run(page, NOTEBOOKS[0], timeout=300)
        assert page.locator("details").count() == 4  # one per exercise, each closed
        assert not page.get_by_text("exercise 00.1: correct!").is_visible()
        page.locator("details summary").first.click()  # one click shows what the solution printed
        wait_until(lambda: page.get_by_text("exercise 00.1: correct!").is_visible(), "solution 1 shown")


def test_03_training_progress_bars_render_as_widgets(lab):
    with page_of(lab, NOTEBOOKS[1]) as page:
        assert_clean_run(page, NOTEBOOKS[1], timeout=900)  # trains its clean runs: a minute or two here
        bars = page.locator(".jp-OutputArea-output .jupyter-widgets .progress-bar")
        assert bars.count() >= 1, "no progress bar rendered as a widget"
        finished = re.compile(r"clean\s+runs:\s+100%")  # tqdm's label (it spaces with U+2007)
        assert page.locator(".jp-OutputArea-output .jupyter-widgets", has_text=finished).count() >= 1, "no training bar"


def test_07_explorer_controls_change_the_figure(lab):
    with page_of(lab, NOTEBOOKS[2]) as page:
        assert_clean_run(page, NOTEBOOKS[2], timeout=600)
        explorer = page.locator(".widget-vbox", has=page.locator("text=EPA rank")).last
        caption, figure = explorer.locator(".widget-html").first, explorer.locator(".widget-output img").first
        seen = [(caption.inner_text(), figure.get_attribute("src"))]
        assert seen[0][0].startswith("test #") and ": airplane, EPA rank 0 of " in seen[0][0]

        def changes(action, what: str) -> str:
            action()
            wait_until(lambda: caption.inner_text() != seen[-1][0], f"{what}: the caption changes")
            wait_until(lambda: figure.get_attribute("src") != seen[-1][1], f"{what}: the figure changes")
            seen.append((caption.inner_text(), figure.get_attribute("src")))
            return seen[-1][0]

        last = int(seen[0][0].split(" of ")[1].split(" ")[0])
        text = changes(lambda: explorer.get_by_role("button", name="hardest").click(), "hardest")
        assert f"EPA rank {last} of {last} " in text and ": airplane," in text
        text = changes(lambda: explorer.locator("select").select_option(label="automobile"), "class automobile")
        assert ": automobile, EPA rank 0 of " in text  # a new class starts at its easiest target
        text = changes(lambda: (explorer.locator("[role=slider]").focus(), page.keyboard.press("ArrowRight")), "slider")
        assert ": automobile, EPA rank 1 of " in text
        text = changes(lambda: explorer.get_by_role("button", name="easiest").click(), "easiest")
        assert ": automobile, EPA rank 0 of " in text
        assert seen[-1] == seen[2]  # the same target again: the same caption and the same figure


def test_poisondiff_explore_serves_the_explorer_as_a_page(lab):
    folder = lab["shots"] / "explore"
    folder.mkdir()
    with explore_server(folder / "voila.log", lab["env"], folder) as url:
        page = lab["browser"].new_page(viewport={"width": 1400, "height": 1000})
        shot = folder / "explore.png"
        try:
            page.goto(url)
            caption = page.locator(".widget-html", has_text="EPA rank").first
            caption.wait_for(timeout=300_000)  # Voilà runs the app's cells first
            figure = page.locator(".widget-output img").first
            before = (caption.inner_text(), figure.get_attribute("src"))
            assert page.get_by_text("explore.saved_view(").count() == 0, "Voilà shows no code"
            assert page.locator(".cm-editor, .CodeMirror").count() == 0
            page.get_by_role("button", name="hardest").click()
            wait_until(lambda: caption.inner_text() != before[0], "hardest: the caption changes")
            wait_until(lambda: figure.get_attribute("src") != before[1], "hardest: the figure changes")
            assert ": airplane, EPA rank " in caption.inner_text() and " rank 0 of" not in caption.inner_text()
            errors = page.get_by_text("Error displaying widget")
            assert errors.count() == 0, errors.first.evaluate("e => e.parentElement.parentElement.outerHTML")[:1500]
            page.screenshot(path=str(shot))
        except Exception as exc:
            with contextlib.suppress(Exception):
                page.screenshot(path=str(shot))
            pytest.fail(f"{type(exc).__name__}: {exc} (screenshot: {shot}; Voilà's log: {folder / 'voila.log'})")
        finally:
            page.close()
