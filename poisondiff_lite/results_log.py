"""The study's results log: one JSON line per finished (target, attack, victim), appended and never rewritten."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from .errors import ResultsFileError


def _is_victim_row(row: dict[str, Any]) -> bool:
    """Does a parsed log line hold what every reader of a victim row needs (a line that parses but lacks them, or
    holds the wrong types, counts as damaged, like one that does not parse)?"""
    number = (int, float)
    return (
        isinstance(row.get("key"), str)
        and isinstance(row.get("attack"), str)
        and isinstance(row.get("victim"), int)
        and not isinstance(row.get("victim"), bool)
        and isinstance(row.get("success"), bool)
        and isinstance(row.get("clean_accuracy"), number)
        and not isinstance(row.get("clean_accuracy"), bool)
    )


class ResultsLog:
    """One JSON line per finished (target, attack, victim); appended with fsync, never rewritten.

    The first line describes the study; a log of another study is refused. Only the writer (the study) repairs the
    file, and only a torn *last* line, cut short by a crash mid-append (the only thing that can be lost), so a
    finished victim is never trained twice. A damaged line elsewhere is skipped and reported with its line number
    (`damaged`); the valid rows after it are kept. Readers (`read`) never write.
    """

    def __init__(self, path: str | os.PathLike, header: dict[str, Any], *, writable: bool = True) -> None:
        self.path = Path(path)
        self.header = header
        self.writable = writable
        self.rows: list[dict[str, Any]] = []
        self.damaged: list[int] = []  # 1-based numbers of skipped lines
        if self.path.exists():
            self._load()
        elif writable:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._append({"header": header})
        else:
            raise ResultsFileError(f"no study log at {self.path}. Fix: run the study (run_study) first.")

    @classmethod
    def read(cls, path: str | os.PathLike) -> ResultsLog:
        """Open an existing log whatever study it belongs to, read-only (the file is never changed)."""
        path = Path(path)
        if not path.exists():
            raise ResultsFileError(f"no study log at {path}. Fix: run the study (run_study) first.")
        first = path.open("rb").readline()
        try:
            header = json.loads(first)["header"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise ResultsFileError(
                f"{path} is not a poisondiff study log. Fix: pass another results folder, or delete the file."
            ) from None
        return cls(path, header, writable=False)

    def _load(self) -> None:
        raw = self.path.read_bytes()
        complete, _, tail = raw.rpartition(b"\n")  # what follows the last newline is an unfinished append
        lines = complete.split(b"\n") if complete else []
        good: list[dict[str, Any]] = []
        for number, line in enumerate(lines, start=1):
            try:
                row = json.loads(line)
                if not isinstance(row, dict) or (number > 1 and not _is_victim_row(row)):
                    raise ValueError
            except ValueError:  # json.JSONDecodeError and UnicodeDecodeError are ValueErrors
                self.damaged.append(number)
                continue
            good.append(row)
        if tail and self.writable:  # a torn tail from an interrupted append: the writer cuts it off
            with open(self.path, "r+b") as handle:
                handle.truncate(len(raw) - len(tail))
        if not good or "header" not in good[0] or (self.damaged and self.damaged[0] == 1):
            raise ResultsFileError(
                f"{self.path} is not a poisondiff study log. Fix: pass another results folder, or delete the file."
            )
        if good[0]["header"].get("study") != self.header.get("study"):
            raise ResultsFileError(
                f"{self.path} belongs to another study ({good[0]['header'].get('study')}, yours "
                f"{self.header.get('study')}). Fix: pass another results folder, or delete it."
            )
        self.rows = good[1:]
        if self.damaged:
            shown = ", ".join(map(str, self.damaged[:10])) + (" ..." if len(self.damaged) > 10 else "")
            warnings.warn(
                f"{self.path}: skipped {len(self.damaged)} damaged line(s) ({shown}); the other "
                f"{len(self.rows)} rows are kept. Those victims count as not done and will be rerun.",
                stacklevel=3,
            )

    def _append(self, obj: dict[str, Any]) -> None:
        if not self.writable:
            raise ResultsFileError(f"{self.path} was opened read-only. Fix: open it with ResultsLog(path, header).")
        line = (json.dumps(obj, sort_keys=True) + "\n").encode()
        with open(self.path, "ab") as handle:
            handle.write(line)
            handle.flush()
            os.fsync(handle.fileno())

    def append(self, row: dict[str, Any]) -> None:
        self._append(row)
        self.rows.append(row)

    def done(self) -> set[tuple[str, str, int]]:
        """``(setup key, attack, victim seed)`` of every finished victim."""
        return {(r["key"], r["attack"], int(r["victim"])) for r in self.rows}
