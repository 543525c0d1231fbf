"""The tutorial as a website: Sphinx with MyST-NB over the executed notebooks of the last ``poisondiff tutorial``
run, the README as its front page, docs/lab-study.md, and an API reference generated from the docstrings of
``pdl.__all__``. Notebooks are not executed again (MyST-NB's execution is off); hidden solution cells keep their code
behind a toggle, and what they print stays folded (`exercises.folded`).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

from .errors import PoisonDiffError
from .notebook_files import numbered_notebooks
from .utils import check_writable, project_root

INSTALL_FIX = 'Fix: pip install -e ".[site]" (Sphinx and MyST-NB)'
LOCAL_LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)#\s]+)(#[^)]*)?\)")

CONF = """\
# Sphinx settings of the tutorial's site (written by `poisondiff site`)
project = "poisondiff-lite"
extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
]
nb_execution_mode = "off"  # the notebooks ran in `poisondiff tutorial`; the site shows those outputs
nb_merge_streams = True
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3  # README links such as (#teaching-with-it) resolve
autosummary_generate = True
autodoc_typehints = "none"  # the signatures carry them; descriptions stay short
autodoc_default_options = {"members": False}
napoleon_numpy_docstring = True
html_theme = "alabaster"
html_title = "poisondiff-lite"
exclude_patterns = ["_build"]
"""

API = """\
# API reference

Everything `import poisondiff_lite as pdl` offers (`pdl.__all__`), from the docstrings.

```{{eval-rst}}
.. currentmodule:: poisondiff_lite

.. autosummary::
   :toctree: generated

{names}
```
"""


def _require_sphinx() -> None:
    try:
        import myst_nb  # noqa: F401
        import sphinx  # noqa: F401
    except ImportError:
        raise PoisonDiffError(f"Sphinx or MyST-NB is not installed. {INSTALL_FIX}") from None


def _copy_linked_files(text: str, base: Path, source: Path) -> None:
    """Copy the repository files a page links to (relative links) beside it in the site's source, so a link to a
    benchmark's JSON becomes a download instead of a dead link."""
    for match in LOCAL_LINK.finditer(text):
        target = (base / match.group(1)).resolve()
        if target.is_file() and project_root() in target.parents:
            destination = source / target.relative_to(project_root())
            if not destination.exists():
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(target, destination)


def _executed(notebook: dict) -> bool:
    return all(c.get("execution_count") is not None for c in notebook["cells"] if c["cell_type"] == "code")


def _site_notebook(notebook: dict) -> dict:
    """An executed notebook for the site: hidden solution cells get MyST-NB's ``hide-input`` tag (code behind a
    toggle)."""
    for cell in notebook["cells"]:
        tags = cell.get("metadata", {}).get("tags", [])
        if "solution" in tags and "hide-input" not in tags:
            cell["metadata"]["tags"] = [*tags, "hide-input"]
    return notebook


def site_source(executed: str | Path, source: str | Path) -> Path:
    """Lay out the Sphinx source in `source`: index.md (the README and the table of contents), docs/, the executed
    notebooks of `executed`, api.md and conf.py. Returns `source`."""
    root, source = project_root(), Path(source)
    notebooks = {nb: json.loads(nb.read_text()) for nb in numbered_notebooks(executed)}
    if not any(_executed(notebook) for notebook in notebooks.values()):
        raise PoisonDiffError(
            f"the notebooks in {executed} were never run. Fix: run `poisondiff tutorial` first (it writes "
            f"build/notebooks/), or pass --notebooks with executed ones"
        )
    if source.exists():
        shutil.rmtree(source)
    (source / "notebooks").mkdir(parents=True)
    for nb, notebook in notebooks.items():
        (source / "notebooks" / nb.name).write_text(json.dumps(_site_notebook(notebook), indent=1, ensure_ascii=False))
    readme = (root / "README.md").read_text()
    pages = [f"notebooks/{nb.stem}" for nb in notebooks]
    for doc in sorted((root / "docs").glob("*.md")):
        (source / "docs").mkdir(exist_ok=True)
        text = doc.read_text()
        (source / "docs" / doc.name).write_text(text)
        _copy_linked_files(text, doc.parent, source)
        pages.append(f"docs/{doc.stem}")
    _copy_linked_files(readme, root, source)
    toc = "\n".join(pages + ["api"])
    (source / "index.md").write_text(f"{readme}\n\n```{{toctree}}\n:hidden:\n:caption: Contents\n\n{toc}\n```\n")
    from . import __all__ as names

    (source / "api.md").write_text(API.format(names="\n".join(f"   {name}" for name in sorted(names))))
    (source / "conf.py").write_text(CONF)
    return source


def build_site(
    executed: str | Path | None = None, out: str | Path | None = None, *, warnings_as_errors: bool = True
) -> Path:
    """Build the static HTML site into `out` (default build/site) from the executed notebooks in `executed`
    (default build/notebooks, what ``poisondiff tutorial`` writes); with Sphinx's warnings as errors. Returns the
    path of index.html."""
    _require_sphinx()
    root = project_root()
    executed = Path(executed) if executed else root / "build" / "notebooks"
    out = check_writable(out or root / "build" / "site", what="--out", fix="choose another folder")
    source = site_source(executed, out.parent / f"{out.name}-source")
    args = [sys.executable, "-m", "sphinx", "-b", "html", "-q", str(source), str(out)]
    if warnings_as_errors:
        args[3:3] = ["-W", "--keep-going"]
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        problems = [line for line in done.stderr.splitlines() if "WARNING" in line or "ERROR" in line]
        raise PoisonDiffError(
            f"Sphinx failed ({len(problems)} warnings or errors); first: {(problems or [done.stderr.strip()])[0]}"
        )
    return out / "index.html"
