"""Copy a finished lab study from the results folder into the package (maintainers; see README "Shipped results").

    poisondiff study --lab --no-progress                 # run (or resume) the study first
    python scripts/ship_lab_study.py cifar10-lab-scratch --wall-seconds 5400 --note "..."

The study is found by its preset (`shipped.LAB_STUDIES`), so a preset changed since the run finds nothing to ship.
"""

from __future__ import annotations

import argparse
import sys

from poisondiff_lite.errors import PoisonDiffError
from poisondiff_lite.shipped import LAB_STUDIES, ship
from poisondiff_lite.study import load_study


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(LAB_STUDIES))
    parser.add_argument("--results-dir", default=None, help="results folder (else $POISONDIFF_RESULTS, else results/)")
    parser.add_argument("--wall-seconds", type=float, required=True, help="how long the study took, all runs together")
    parser.add_argument("--code-version", default=None, help="the commit that ran it (default: git describe now)")
    parser.add_argument("--note", default="", help="how it was run, if not by the command alone")
    parser.add_argument("--partial", action="store_true", help="ship an unfinished study, marked as such")
    args = parser.parse_args(argv)
    preset, command = LAB_STUDIES[args.name]
    try:
        result = load_study(preset(), args.results_dir)
        folder = ship(
            result,
            args.name,
            description=_describe(result) + (f" {args.note}" if args.note else ""),
            command=command,
            wall_seconds=args.wall_seconds,
            code_version=args.code_version,
            allow_partial=args.partial,
        )
    except PoisonDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"shipped {args.name} ({len(result.targets)} targets, {len(result.rows)} victim rows) to {folder}")
    return 0


def _describe(result) -> str:
    attacks = ", ".join(result.label(a) for a in result.attack_ids())
    return (
        f"{result.config.trajectory.dataset}, lab preset: {attacks}; {len(result.targets)} targets, "
        f"{result.config.victims} victims each, plus no-attack victims."
    )


if __name__ == "__main__":
    sys.exit(main())
