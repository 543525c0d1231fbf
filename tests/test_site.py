"""The tutorial as a website: `poisondiff site` builds Sphinx + MyST-NB from an executed notebook with warnings as
errors; figures are in place, solutions collapsed, the API reference generated, and every internal link resolves."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from poisondiff_lite import PoisonDiffError, cli, site


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.ids.add(attrs["id"])
        for key in ("href", "src"):
            if attrs.get(key):
                self.links.append(attrs[key])


def _parse(path: Path) -> _Links:
    parser = _Links()
    parser.feed(path.read_text())
    return parser


def broken_links(folder: Path) -> list[str]:
    """Every relative href/src of every page that names no file of the site, or an anchor its page lacks."""
    pages = {p: _parse(p) for p in folder.rglob("*.html")}
    broken = []
    for page, parsed in pages.items():
        for link in parsed.links:
            parts = urlsplit(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            target = (page.parent / unquote(parts.path)).resolve() if parts.path else page
            if not target.exists():
                broken.append(f"{page.relative_to(folder)} -> {link}")
            elif parts.fragment and target.suffix == ".html":
                ids = pages[target].ids if target in pages else _parse(target).ids
                if unquote(parts.fragment) not in ids:
                    broken.append(f"{page.relative_to(folder)} -> {link} (no such anchor)")
    return broken


@pytest.fixture(scope="module")
def built(tmp_path_factory, data_root):
    pytest.importorskip("myst_nb", reason='Fix: pip install -e ".[site]"')
    folder = tmp_path_factory.mktemp("site")
    executed = folder / "executed"
    assert cli.main(["tutorial", "--only", "00", "--out", str(executed), "--no-progress"]) == 0
    assert cli.main(["site", "--notebooks", str(executed), "--out", str(folder / "html")]) == 0  # -W: warnings fail
    return folder / "html"


@pytest.mark.slow
def test_the_site_has_the_notebook_with_its_figures_and_collapsed_solutions(built):
    page = (built / "notebooks" / "00_setup_and_data.html").read_text()
    assert "00 · Setup and data" in page
    assert len(re.findall(r"<img [^>]*src=\"\.\./_images/", page)) >= 1, "the notebook's figures are missing"
    assert page.count("hide-input") >= 4  # one toggle per hidden solution's code
    assert len(re.findall(r"<details><summary>exercise \d: what the solution prints", page)) == 4
    assert "<details open" not in page


@pytest.mark.slow
def test_the_site_has_the_readme_lab_study_and_api_and_no_broken_link(built):
    index = (built / "index.html").read_text()
    assert "Teaching with it" in index and 'href="notebooks/00_setup_and_data.html"' in index
    assert (built / "docs" / "lab-study.html").exists()
    assert (built / "generated" / "poisondiff_lite.epa.html").exists()  # autosummary of pdl.__all__
    assert broken_links(built) == []


def test_the_link_check_finds_a_dead_link_and_a_missing_anchor(tmp_path):
    (tmp_path / "a.html").write_text('<a href="b.html#there">b</a><a href="c.html">c</a><p id="x"></p><a href="#x">')
    (tmp_path / "b.html").write_text('<h1 id="here">b</h1>')
    assert broken_links(tmp_path) == ["a.html -> b.html#there (no such anchor)", "a.html -> c.html"]


def test_a_site_needs_executed_notebooks(tmp_path):
    pytest.importorskip("myst_nb")
    (tmp_path / "00_x.ipynb").write_text('{"cells": [{"cell_type": "code", "execution_count": null}]}')
    with pytest.raises(PoisonDiffError, match="never run. Fix: run `poisondiff tutorial` first"):
        site.build_site(tmp_path, tmp_path / "out")
