"""Command line: ``poisondiff tutorial`` (run every notebook headlessly), ``poisondiff epa`` (EPA to CSV) and
``poisondiff metrics`` (EPA, DPS, δ and τ of chosen targets to CSV).

Errors the user can fix are printed as one line (``error: ...``) with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import sys
import time
from pathlib import Path

from .errors import PoisonDiffError
from .utils import project_root


def _tutorial(args: argparse.Namespace) -> int:
    import papermill as pm

    notebooks = sorted(Path(args.notebooks).glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        notebooks = [nb for nb in notebooks if any(nb.name.startswith(o) for o in args.only)]
    if not notebooks:
        raise PoisonDiffError(f"no numbered notebooks found in {args.notebooks}. Fix: run from the project folder or "
                              f"pass --notebooks PATH.")
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    parameters = {"QUICK": not args.full}
    if args.device:
        parameters["DEVICE"] = args.device
    print(f"executing {len(notebooks)} notebooks in {'full' if args.full else 'quick'} mode into {out_dir}/")
    for nb in notebooks:
        target = out_dir / nb.name
        start = time.perf_counter()
        try:
            pm.execute_notebook(str(nb), str(target), parameters=parameters, cwd=str(nb.parent), kernel_name="python3",
                                progress_bar=not args.no_progress, log_output=args.log_output)
        except pm.PapermillExecutionError as exc:
            raise PoisonDiffError(f"{nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}. "
                                  f"The executed notebook with the full traceback is {target}.") from exc
        print(f"  {nb.name:45s} {time.perf_counter() - start:7.1f} s  -> {target}")
    print("done: open the executed notebooks in JupyterLab (jupyter lab " + str(out_dir) + ")")
    return 0


def _epa(args: argparse.Namespace) -> int:
    from .config import TrajectoryConfig
    from .metrics import trajectory_metrics
    from .record import record_trajectories

    preset = TrajectoryConfig.full if args.full else TrajectoryConfig.quick
    config = preset(args.dataset, **({"runs": args.runs} if args.runs else {}))
    traj = record_trajectories(config, data_dir=args.data_dir, download=args.download, device=args.device,
                               show_progress=not args.no_progress, path=args.trajectory)
    scores = trajectory_metrics(traj)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with open(tmp, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["index", "label", "epa", "soft_epa", "dps", "dominant"])
        for i in range(len(scores["epa"])):
            writer.writerow([int(scores["indices"][i]), int(scores["labels"][i]), f"{scores['epa'][i]:.6f}",
                             f"{scores['soft_epa'][i]:.6f}", f"{scores['dps'][i]:.6f}", int(scores["dominant"][i])])
    os.replace(tmp, out)
    print(f"wrote {len(scores['epa'])} rows to {out} ({traj.completed} runs x {traj.num_epochs} epochs)")
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from .config import TrajectoryConfig
    from .data import load_dataset
    from .metrics_table import target_metrics_csv

    preset = TrajectoryConfig.full if args.full else TrajectoryConfig.quick
    config = preset(args.dataset)
    overrides = {k: v for k, v in (("runs", args.runs), ("seed0", args.seed)) if v is not None}
    if args.epochs:
        overrides["train"] = dataclasses.replace(config.train, epochs=args.epochs)
    config = dataclasses.replace(config, **overrides)
    data = load_dataset(config.dataset, args.data_dir, download=args.download)
    if config.classes is not None:
        data = data.select_classes(list(config.classes))
    poison = None
    if args.poison_class and args.poison_class != ["all"]:
        poison = [data.class_index(int(c) if c.isdigit() else c) for c in args.poison_class]
    target = int(args.target_class) if str(args.target_class).isdigit() else args.target_class
    rows = target_metrics_csv(config, args.out, target_class=target, per_bucket=args.per_bucket,
                              indices=args.indices, poison_classes=poison, last_layer_only=args.last_layer,
                              tau_batches=args.tau_batches, tau_batch_size=args.tau_batch_size, variant=args.variant,
                              data=data, device=args.device, show_progress=not args.no_progress)
    print(f"{args.out}: {len(rows)} rows (target x poison class)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="poisondiff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    tut = sub.add_parser("tutorial", help="execute every notebook headlessly with papermill")
    tut.add_argument("--full", action="store_true", help="paper settings (needs a GPU); default is quick mode")
    tut.add_argument("--out", default=str(project_root() / "build" / "notebooks"), help="folder for executed notebooks")
    tut.add_argument("--notebooks", default=str(project_root() / "notebooks"), help="folder of the numbered notebooks")
    tut.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these prefixes (e.g. 00 02)")
    tut.add_argument("--device", default=None, help='"auto" | "cpu" | "cuda"')
    tut.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    tut.add_argument("--no-progress", action="store_true", help="no progress bars")
    tut.set_defaults(func=_tutorial)

    epa = sub.add_parser("epa", help="record clean trajectories and write EPA, soft EPA and DPS to a CSV")
    epa.add_argument("--dataset", default="cifar10", help='"cifar10" | "tinyimagenet"')
    epa.add_argument("--full", action="store_true", help="paper settings (M=8, 40 epochs, ResNet-18/VGG-16)")
    epa.add_argument("--runs", type=int, default=None, help="override M, the number of clean runs")
    epa.add_argument("--data-dir", default=None, help="dataset folder (else $POISONDIFF_DATA, else data/)")
    epa.add_argument("--download", action="store_true", help="download the dataset when missing")
    epa.add_argument("--device", default="auto", help='"auto" | "cpu" | "cuda"')
    epa.add_argument("--trajectory", default=None, help="trajectory .npz path (default: under results/)")
    epa.add_argument("--out", default="results/epa.csv", help="CSV to write")
    epa.add_argument("--no-progress", action="store_true", help="no progress bars")
    epa.set_defaults(func=_epa)

    met = sub.add_parser("metrics", help="EPA, DPS, δ and τ of chosen targets to a CSV (resumable)")
    met.add_argument("--dataset", default="cifar10", help='"cifar10" | "tinyimagenet"')
    met.add_argument("--full", action="store_true", help="paper settings (M=8, 40 epochs, ResNet-18/VGG-16)")
    met.add_argument("--runs", type=int, default=None, help="override M, the number of clean runs")
    met.add_argument("--epochs", type=int, default=None, help="override the epochs of each clean run")
    met.add_argument("--seed", type=int, default=None, help="seed of the first clean run")
    met.add_argument("--target-class", default="0", help="class whose EPA buckets give the targets (name or index)")
    met.add_argument("--per-bucket", type=int, default=10, help="targets per EPA bucket")
    met.add_argument("--indices", type=int, nargs="*", default=None, help="explicit test indices instead of buckets")
    met.add_argument("--poison-class", nargs="*", default=["all"], help='poison classes (names or indices) or "all"')
    met.add_argument("--last-layer", action="store_true", help="δ and τ over the last layer only")
    met.add_argument("--tau-batches", type=int, default=50, help="batches estimating g(D_c; w_p)")
    met.add_argument("--tau-batch-size", type=int, default=256, help="their size")
    met.add_argument("--variant", default="derived", help='Lambert-W argument: "derived" (C-1)/e or "authors" C-1/e')
    met.add_argument("--data-dir", default=None, help="dataset folder (else $POISONDIFF_DATA, else data/)")
    met.add_argument("--download", action="store_true", help="download the dataset when missing")
    met.add_argument("--device", default="auto", help='"auto" | "cpu" | "cuda"')
    met.add_argument("--out", default="results/metrics.csv", help="CSV to write (rows already there are kept)")
    met.add_argument("--no-progress", action="store_true", help="no progress bars")
    met.set_defaults(func=_metrics)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except PoisonDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
