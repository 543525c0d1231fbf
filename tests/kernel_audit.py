"""Runs at the start of every notebook kernel the tests start (an IPython startup file, see conftest.py).

Appends JSON lines to ``$POISONDIFF_AUDIT_LOG`` for `test_tutorial_consistency.py`:
- ``{"open": path, "write": bool}`` for every file opened (or renamed into place, or removed) under the results folder;
- ``{"epa": key, "values": {index: epa}}`` after a cell that changed it, for every recorded trajectory and study the
  notebook holds (top-level names, and one level into containers and objects), keyed by the experiment's file name.
The test suite's process writes ``{"cell": ...}`` before each cell runs, so each line belongs to the cell above it.
"""

from __future__ import annotations

import json
import os
import sys
import types


def _install() -> None:
    log_path = os.environ.get("POISONDIFF_AUDIT_LOG")
    results = os.environ.get("POISONDIFF_RESULTS")
    if not log_path or not results:
        return
    root = os.path.realpath(results) + os.sep
    log = open(log_path, "a", buffering=1)  # opened before the hook: its own writes are not audited
    busy = []

    def emit(entry: dict) -> None:
        busy.append(1)
        try:
            log.write(json.dumps(entry) + "\n")
        finally:
            busy.pop()

    def under_results(path) -> str | None:
        if isinstance(path, int) or path is None:
            return None
        try:
            path = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return None
        if not path.startswith(root) or os.path.isdir(path):
            return None
        name = os.path.basename(path)
        return None if ".lock" in name or name.startswith(".") else path[len(root) :]  # locks and temporary files

    def hook(event: str, args: tuple) -> None:
        if busy or event not in ("open", "os.rename", "os.replace", "os.remove", "shutil.rmtree"):
            return
        if event == "open":
            path, mode, flags = args
            write = bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC)) or any(
                c in (mode or "") for c in "wax+"
            )
        else:
            path, write = args[1] if event.startswith("os.re") else args[0], True  # a rename: its destination
        relative = under_results(path)
        if relative is not None:
            emit({"open": relative, "write": write})

    sys.addaudithook(hook)

    computed: dict = {}  # id -> (the trajectory, its completed runs, its EPA): computed once per state, not per cell
    emitted: dict = {}  # key -> the EPA last logged for it: a line only when it changes

    def epa_of(value, key_of, seen: dict) -> None:
        from poisondiff_lite.metrics import trajectory_metrics
        from poisondiff_lite.results import StudyResults
        from poisondiff_lite.trajectory import Trajectory

        if isinstance(value, Trajectory) and value.completed:
            held, completed, values = computed.get(id(value), (None, None, None))
            if held is not value or completed != value.completed:  # the object is kept, so its id is not reused
                scores = trajectory_metrics(value.finished())
                values = {int(i): round(float(e), 6) for i, e in zip(scores["indices"], scores["epa"])}
                computed[id(value)] = (value, value.completed, values)
            seen.setdefault(key_of(value.config), {}).update(values)
        elif isinstance(value, StudyResults):
            values = {int(t["index"]): round(float(t["epa"]), 6) for t in value.targets if "epa" in t}
            seen.setdefault(key_of(value.config.trajectory), {}).update(values)

    def after_cell(result) -> None:
        if "poisondiff_lite" not in sys.modules:
            return
        from poisondiff_lite.record import default_path

        def key_of(config) -> str:
            return default_path(config, "/").name

        seen: dict = {}
        shell = get_ipython()  # noqa: F821 (the kernel's global)
        for name, value in list(shell.user_ns.items()):
            if name.startswith("_") or isinstance(value, (types.ModuleType, type)):
                continue
            inner = list(value.values()) if isinstance(value, dict) else []
            inner += list(value) if isinstance(value, (list, tuple)) else []
            inner += [v for item in inner if isinstance(item, tuple) for v in item]
            inner += list(vars(value).values()) if hasattr(value, "__dict__") else []
            for candidate in [value, *inner]:
                try:
                    epa_of(candidate, key_of, seen)
                except Exception:  # a half-built object: nothing to say about it
                    pass
        for key, values in seen.items():
            if emitted.get(key) != values:
                emitted[key] = values
                emit({"epa": key, "values": values})

    get_ipython().events.register("post_run_cell", after_cell)  # noqa: F821


_install()
