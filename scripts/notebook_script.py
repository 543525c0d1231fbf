"""Turn a tutorial notebook into a plain Python script, with parameter overrides injected after its parameters cell
(as papermill does), for machines that have PyTorch but no Jupyter (e.g. a rented GPU).

    python scripts/notebook_script.py notebooks/05_attack_validation_cifar10.ipynb nb05.py \
        'QUICK = True' 'DEVICE = "cuda"'
    POISONDIFF_DATA=... python nb05.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def notebook_script(notebook: str | Path, overrides: list[str]) -> str:
    """The code cells of `notebook` in order, `overrides` (one assignment each) right after the parameters cell."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    parts = ["import matplotlib\n\nmatplotlib.use('Agg')  # no display: figures are drawn, not shown\n"]
    for cell in cells:
        if cell["cell_type"] != "code":
            continue
        parts.append("".join(cell["source"]))
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            parts.append("\n".join(overrides))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    Path(sys.argv[2]).write_text(notebook_script(sys.argv[1], sys.argv[3:]))
