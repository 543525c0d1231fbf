"""Project contracts: environment.yml agrees with pyproject.toml, notebooks follow the skeleton, the CLI fails
cleanly, ruff finds nothing."""

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "poisondiff_lite"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
REQUIRED_PARAMETERS = {"QUICK", "SEED", "DEVICE", "DATA_DIR"}


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _pins(requirements):
    return {re.split(r"[=<>~!\[ ]", r, maxsplit=1)[0].lower(): r.replace(" ", "") for r in requirements}


def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    project = _pyproject()["project"]
    assert env["channels"] == ["conda-forge"]
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python"))
    minimum = project["requires-python"].removeprefix(">=")
    assert tuple(map(int, python.split("=")[1].split("."))) >= tuple(map(int, minimum.split(".")))
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    install = [p for p in pip if p.startswith("-e")]
    assert len(install) == 1, "environment.yml must install the project itself"
    extras = re.search(r"\[(.*)\]", install[0]).group(1).split(",")
    assert set(extras) <= set(project["optional-dependencies"]), "environment.yml names an extra pyproject lacks"
    declared = _pins(project["dependencies"])
    for requirement in (p for p in pip if not p.startswith("-e")):
        name = re.split(r"[=<>~!]", requirement)[0].lower()
        assert declared.get(name) == requirement, f"{requirement} in environment.yml differs from pyproject.toml"
    assert declared["torch"] == "torch==2.14.1" and declared["torchvision"] == "torchvision==0.29.1"


def test_extras_hold_what_the_readme_promises():
    extras = _pyproject()["project"]["optional-dependencies"]
    names = {n for group in extras.values() for n in _pins(group)}
    assert {"jupyterlab", "ipywidgets", "papermill", "nbval", "pytest"} <= names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_skeleton(path):
    nb = nbformat.read(path, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {path.name[:2]} ")
    assert "Learning goals" in nb.cells[0].source
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1, "exactly one cell tagged `parameters`"
    names = set(re.findall(r"^([A-Z_]+)(?:: [^=]+)? = ", tagged[0].source, flags=re.M))
    assert REQUIRED_PARAMETERS <= names
    for line in tagged[0].source.splitlines():
        assert "#" in line, f"parameter without a comment: {line}"
    headings = [c.source.splitlines()[0] for c in nb.cells if c.cell_type == "markdown"]
    assert any(h.startswith("## Exercises") for h in headings)
    assert "## Summary" in "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert not cell.outputs and cell.execution_count is None, "outputs must be stripped in git"
    raw = json.loads(path.read_text())  # nbformat 4.5: every cell needs a unique id (nbformat.read adds missing ones)
    ids = [c.get("id") for c in raw["cells"]]
    assert None not in ids and len(set(ids)) == len(ids), "every cell needs its own id"


def test_papermill_sees_the_parameters():
    import papermill as pm

    for path in NOTEBOOKS:
        parameters = pm.inspect_notebook(str(path))
        assert REQUIRED_PARAMETERS <= set(parameters)
        untyped = [name for name, p in parameters.items() if p["inferred_type_name"] == "None"]
        assert not untyped, f"{path.name}: parameters without a type annotation (papermill shows them as unknown)"


def test_cli_reports_bad_input_in_one_line():
    result = subprocess.run(
        [sys.executable, "-m", "poisondiff_lite.cli", "epa", "--dataset", "mnist"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: unknown dataset 'mnist'; valid choices: 'cifar10', 'tinyimagenet'"
    ]


def test_papermill_runs_a_notebook_with_injected_parameters(tmp_path):
    import papermill as pm

    out = tmp_path / "00.ipynb"
    pm.execute_notebook(
        str(NOTEBOOKS[0]),
        str(out),
        parameters={"QUICK": True, "SEED": 3, "INTERACTIVE": False},
        cwd=str(NOTEBOOKS[0].parent),
        kernel_name="python3",
        progress_bar=False,
    )
    nb = nbformat.read(out, as_version=4)
    injected = [c for c in nb.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and "SEED = 3" in injected[0].source
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "quick mode: True" in printed


def test_notebook_errors_show_one_line_naming_the_choices():
    from nbclient import NotebookClient
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(
        cells=[
            new_code_cell("import poisondiff_lite as pdl\npdl.short_errors()"),
            new_code_cell('pdl.TrainConfig(model="resnet99")'),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=120, allow_errors=True, kernel_name="python3").execute()
    errors = [o for o in nb.cells[1].outputs if o.output_type == "error"]
    assert len(errors) == 1, "the cell must still fail, so papermill and nbval stop there"
    assert errors[0].ename == "InvalidChoiceError"
    assert len(errors[0].traceback) == 1 and "valid choices: 'fastnet'" in errors[0].traceback[0]


@pytest.mark.parametrize(
    "notebook, parameters, message",
    [
        (
            "05",
            {"TARGET_CLASS": "aeroplane"},
            "unknown class name 'aeroplane'; valid choices: 'airplane', 'automobile'",
        ),
        ("05", {"BUDGET": -0.01}, "budget must be > 0, got -0.01"),
        ("06", {"BUDGET": -0.01}, "budget must be > 0, got -0.01"),
        (
            "01",
            {"MODEL": "resnet99"},
            "unknown model 'resnet99'; valid choices: 'fastnet', 'fastnet_small', 'resnet18'",
        ),
        ("07", {"EXPLORE_DATASET": "mnist"}, "unknown dataset 'mnist'; valid choices: 'cifar10', 'tinyimagenet'"),
        ("02", {"SEED": "abc"}, "seed must be an integer, got 'abc'"),  # papermill -r passes strings
        ("02", {"QUICK": "maybe"}, "QUICK must be True or False, got 'maybe'"),
    ],
)
def test_bad_notebook_parameters_stop_with_one_line(notebook, parameters, message, tmp_path):
    """Run the real notebook with a wrong parameter: it must stop at once, with one line naming the valid choices."""
    import papermill as pm

    path = next(p for p in NOTEBOOKS if p.name.startswith(notebook))
    out = tmp_path / path.name
    with pytest.raises(pm.PapermillExecutionError) as info:
        pm.execute_notebook(
            str(path),
            str(out),
            parameters={"QUICK": "True", "INTERACTIVE": False, **parameters, "RESULTS_DIR": str(tmp_path)},
            cwd=str(path.parent),
            kernel_name="python3",
            progress_bar=False,
        )
    assert message in info.value.evalue
    nb = nbformat.read(out, as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert len(errors) == 1 and len(errors[0].traceback) == 1, "one line, no traceback"
    assert not list(tmp_path.glob("trajectories/*.npz")), "nothing may be trained before the input is checked"


def test_ruff_finds_nothing():
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", str(ROOT)], capture_output=True, text=True
    )
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr


def test_ruff_format_leaves_the_code_as_it_is():
    ruff = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--check", "--no-cache", str(ROOT)], capture_output=True, text=True
    )
    assert ruff.returncode == 0, ruff.stdout + ruff.stderr


def test_no_package_module_is_over_400_lines_and_the_study_runner_under_300():
    sizes = {p.relative_to(ROOT).as_posix(): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert max(sizes.values()) <= 400, {k: v for k, v in sizes.items() if v > 400}
    assert sizes["poisondiff_lite/study.py"] < 300


PLUGIN_MODEL = """
import torch.nn as nn
import poisondiff_lite as pdl

pdl.register_model("plugmlp", lambda c: (nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 32), nn.ReLU()),
                                         nn.Linear(32, c)))
"""


@pytest.mark.parametrize(
    "notebook, parameters, printed",
    [
        (
            "03",
            {
                "DATASET": "tinyimagenet",
                "TARGET_CLASS": "goldfish",
                "POISON_CLASS": "European fire salamander",
                "PER_BUCKET": 1,  # the point is another data set: the fewest targets keep the test short
            },
            "targets of class 'goldfish",
        ),
        ("01", {"MODEL": "plugmlp"}, "plugmlp"),  # a model registered by a $POISONDIFF_PLUGINS module
    ],
)
def test_training_notebooks_take_another_dataset_or_a_registered_model(
    notebook, parameters, printed, tmp_path, monkeypatch
):
    import papermill as pm

    (tmp_path / "nbplugin.py").write_text(PLUGIN_MODEL)
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the kernel inherits the environment
    monkeypatch.setenv("POISONDIFF_PLUGINS", "nbplugin")
    path = next(p for p in NOTEBOOKS if p.name.startswith(notebook))
    out = tmp_path / path.name
    pm.execute_notebook(
        str(path),
        str(out),
        parameters={"QUICK": True, "INTERACTIVE": False, **parameters},
        cwd=str(path.parent),
        kernel_name="python3",
        progress_bar=False,
    )
    nb = nbformat.read(out, as_version=4)
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert printed in text


def test_notebook_script_puts_overrides_right_after_the_parameters():
    import ast
    import importlib.util

    spec = importlib.util.spec_from_file_location("notebook_script", ROOT / "scripts" / "notebook_script.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    path = ROOT / "notebooks" / "05_attack_validation_cifar10.ipynb"
    script = module.notebook_script(path, ["QUICK = True", 'DEVICE = "cuda"'])
    tree = ast.parse(script)  # a plain script: no magics, no cell markers
    assigned = [n.targets[0].id for n in tree.body if isinstance(n, ast.Assign) and isinstance(n.targets[0], ast.Name)]
    annotated = [n.target.id for n in tree.body if isinstance(n, ast.AnnAssign)]
    assert "DEVICE" in annotated and assigned[: assigned.index("DEVICE") + 1][-2:] == ["QUICK", "DEVICE"]
    first_use = script.index("pdl.get_device(DEVICE)")
    assert script.index('DEVICE = "cuda"') < first_use  # the override wins before anything reads the parameter


def test_no_module_imports_another_modules_private_names():
    pattern = re.compile(r"^\s*from \.+[\w.]* import (\([^)]*\)|[^\n]*)", re.M)  # one line, or a ( ... ) list
    offenders = []
    for path in (ROOT / "poisondiff_lite").rglob("*.py"):
        for names in pattern.findall(path.read_text()):
            private = [
                n.strip() for n in names.split(",") if n.strip().startswith("_") and not n.strip().startswith("__")
            ]
            offenders += [f"{path.name}: {n}" for n in private]
    assert not offenders, offenders


def package_imports(package: Path = PACKAGE) -> dict[str, set[str]]:
    """Module -> the package modules it imports, read from the AST of every file: imports inside functions and under
    ``if TYPE_CHECKING:`` count too (a lazy import still ties two modules together)."""
    import ast

    def module_name(path: Path) -> str:
        parts = path.relative_to(package.parent).with_suffix("").parts
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {module_name(p): p for p in package.rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                found = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:  # relative: resolved against this module's package
                    base = name.split(".") if is_package else name.split(".")[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    stem = ".".join(base + ([node.module] if node.module else []))
                else:
                    stem = node.module or ""
                # `from .m import name`: module m; `from . import x`: module x where x is one, else the package
                found = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in modules else stem for a in node.names]
            else:
                continue
            graph[name] |= {m for m in found if m in modules and m != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (each one a cycle of imports), by Tarjan's algorithm."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_import_cycle_finder_sees_lazy_and_type_checking_imports(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from .a import A\n")
    (package / "a.py").write_text("A = 1\n\ndef f():\n    from .b import B\n    return B\n")
    (package / "b.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import A\nB = 2\n")
    (package / "c.py").write_text("from . import a\n")
    graph = package_imports(package)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert import_cycles(graph) == [["pkg.a", "pkg.b"]]


def test_the_package_has_no_import_cycle():
    cycles = import_cycles(package_imports())
    paths = {
        m: m.replace(".", "/") + ("/__init__.py" if (ROOT / m.replace(".", "/")).is_dir() else ".py")
        for g in cycles
        for m in g
    }
    assert not cycles, "import cycles (each a group of modules that import each other): " + "; ".join(
        " <-> ".join(paths[m] for m in group) for group in cycles
    )
