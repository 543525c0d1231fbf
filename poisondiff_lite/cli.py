"""Command line: ``poisondiff tutorial`` (run every notebook headlessly), ``poisondiff epa`` (EPA to CSV),
``poisondiff metrics`` (EPA, DPS, δ and τ of chosen targets to CSV), ``poisondiff study`` (attack validation),
``poisondiff course release|grade`` (coursework with nbgrader), ``poisondiff site`` (the tutorial as a website) and
``poisondiff explore`` (the target explorer as a web page).

Errors the user can fix are printed as one line (``error: ...``) with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from .cli_parser import build_parser
from .errors import PoisonDiffError
from .notebook_files import is_packaged, numbered_notebooks
from .results import CORRELATION_COLUMNS
from .utils import atomic_write_csv, check_writable


def _class(data, text: str) -> int:
    """A class given on the command line as an index or a name."""
    return data.class_index(int(text) if str(text).isdigit() else text)


def _fast(train, args: argparse.Namespace):
    """`train` (a `TrainConfig`) with the command line's speed options; they leave the experiment's identity alone."""
    return dataclasses.replace(train, compile=args.compile, stack=args.stack)


OUT_FIX = "choose another --out, or fix the folder's permissions"


def _check_out(path: str) -> Path:
    """The --out file, refused now (a folder, a place that cannot be written) rather than after the work."""
    out = Path(path)
    if out.is_dir():
        raise PoisonDiffError(f"--out {out} is a folder. Fix: name a file in it, e.g. {out / 'out.csv'}.")
    check_writable(out.parent, what="the folder of --out", fix=OUT_FIX)
    return out


KERNEL_QUIET = ["--log-level=ERROR"]  # silences the kernel's "TCP without encryption" warning, once per notebook


@contextlib.contextmanager
def _inline_figures() -> Iterator[None]:
    """Kernels started here draw inline (no ``MPLBACKEND=agg`` inherited from a headless shell or CI), so executed
    notebooks and the site made from them keep their figures; this process's environment is restored after."""
    saved = os.environ.pop("MPLBACKEND", None)
    try:
        yield
    finally:
        if saved is not None:
            os.environ["MPLBACKEND"] = saved


def _tutorial(args: argparse.Namespace) -> int:
    import papermill as pm

    notebooks = numbered_notebooks(args.notebooks, args.only)
    out_dir = check_writable(args.out, what="--out", fix=OUT_FIX)
    parameters = {"QUICK": not args.full, "INTERACTIVE": False}  # no progress bars or widgets in saved notebooks
    if args.device:
        parameters["DEVICE"] = args.device
    print(f"executing {len(notebooks)} notebooks in {'full' if args.full else 'quick'} mode into {out_dir}/")
    began = time.perf_counter()
    for i, nb in enumerate(notebooks, start=1):
        target = out_dir / nb.name
        print(f"[{i}/{len(notebooks)}] {nb.name} ...", flush=True)
        start = time.perf_counter()
        try:
            with _inline_figures():
                pm.execute_notebook(
                    str(nb),
                    str(target),
                    parameters=parameters,
                    cwd=str(Path.cwd() if is_packaged(nb.parent) else nb.parent),  # the installed copy: from here
                    kernel_name="python3",
                    progress_bar=not args.no_progress,
                    log_output=args.log_output,
                    extra_arguments=KERNEL_QUIET,
                )
        except pm.PapermillExecutionError as exc:
            raise PoisonDiffError(
                f"{nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}. "
                f"The executed notebook with the full traceback is {target}."
            ) from exc
        print(f"  {nb.name:45s} {time.perf_counter() - start:7.1f} s  -> {target}")
    print(
        f"done in {(time.perf_counter() - began) / 60:.1f} min: open the executed notebooks in JupyterLab "
        f"(jupyter lab {out_dir})"
    )
    return 0


def _epa(args: argparse.Namespace) -> int:
    from .metrics import trajectory_metrics
    from .record import record_trajectories

    config = _trajectory(args, **({"runs": args.runs} if args.runs is not None else {}))
    config = dataclasses.replace(config, train=_fast(config.train, args))
    _check_out(args.out)  # before the training, not after it
    traj = record_trajectories(
        config,
        data_dir=args.data_dir,
        download=args.download,
        device=args.device,
        show_progress=not args.no_progress,
        path=args.trajectory,
        keep_models=args.keep_models,
    )
    scores = trajectory_metrics(traj)
    out = Path(args.out)
    rows = [
        {
            "index": int(scores["indices"][i]),
            "label": int(scores["labels"][i]),
            "epa": f"{scores['epa'][i]:.6f}",
            "soft_epa": f"{scores['soft_epa'][i]:.6f}",
            "dps": f"{scores['dps'][i]:.6f}",
            "dominant": int(scores["dominant"][i]),
        }
        for i in range(len(scores["epa"]))
    ]
    atomic_write_csv(out, rows, ["index", "label", "epa", "soft_epa", "dps", "dominant"])
    print(f"wrote {len(scores['epa'])} rows to {out} ({traj.completed} runs x {traj.num_epochs} epochs)")
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from .metrics_table import target_metrics_csv
    from .record import prepare_data

    _check_out(args.out)
    config = _trajectory(args)
    overrides = {k: v for k, v in (("runs", args.runs), ("seed0", args.seed)) if v is not None}
    overrides["train"] = _fast(config.train, args)
    if args.epochs is not None:
        overrides["train"] = dataclasses.replace(overrides["train"], epochs=args.epochs)
    config = dataclasses.replace(config, **overrides)
    data = prepare_data(config, data_dir=args.data_dir, download=args.download)
    poison = None
    if args.poison_class and args.poison_class != ["all"]:
        poison = [_class(data, c) for c in args.poison_class]
    target = _class(data, args.target_class)
    rows = target_metrics_csv(
        config,
        args.out,
        target_class=target,
        per_bucket=args.per_bucket,
        indices=args.indices,
        poison_classes=poison,
        last_layer_only=args.last_layer,
        tau_batches=args.tau_batches,
        tau_batch_size=args.tau_batch_size,
        variant=args.variant,
        data=data,
        device=args.device,
        show_progress=not args.no_progress,
    )
    print(f"{args.out}: {len(rows)} rows (target x poison class)")
    return 0


def _client(args: argparse.Namespace):
    """The Dask client of ``--workers N`` (a local cluster) or ``--scheduler ADDRESS``, or None (run here)."""
    if args.workers is not None and args.scheduler is not None:
        raise PoisonDiffError("choose one of --workers and --scheduler")
    if args.scheduler is not None:
        from .cluster import connect

        return connect(args.scheduler)
    if args.workers is not None:
        from .cluster import local_client

        return local_client(args.workers)
    return None


def _study(args: argparse.Namespace) -> int:
    from .attacks import AttackConfig
    from .errors import check_positive
    from .record import prepare_data
    from .study import StudyConfig, format_table, run_study

    if args.full and args.lab:
        raise PoisonDiffError("choose one of --full and --lab")
    if args.budget is not None and args.poisons is not None:
        raise PoisonDiffError("choose one of --budget and --poisons (a fraction of the training set, or a number)")
    _check_out(args.out)  # the table is written after the study: a bad path fails now, not hours later
    overrides = {
        k: v
        for k, v in (
            ("budget", args.budget),
            ("num_poisons", args.poisons),
            ("steps", args.steps),
            ("restarts", args.restarts),
        )
        if v is not None
    }
    if args.budget is not None:
        overrides["num_poisons"] = None  # the budget asked for wins over a preset's poison count
    if args.eps is not None:
        check_positive("eps (in pixel levels)", args.eps)
        overrides["eps"] = args.eps / 255
    _recipe(args)
    if args.lab:  # the laptop-scale preset: its own attacks unless --attacks names others
        config = StudyConfig.lab(args.dataset, "transfer" if args.transfer else "scratch")
        chosen = [a for a in config.attacks if a.name in args.attacks] if args.attacks else list(config.attacks)
        missing = [n for n in (args.attacks or []) if n not in {a.name for a in chosen}]
        attacks = tuple(dataclasses.replace(a, **overrides) for a in chosen) + tuple(
            AttackConfig.full(n, **overrides, **({"setting": "transfer"} if args.transfer else {})) for n in missing
        )
    else:
        preset = "full" if args.full else "quick"
        attacks = tuple(getattr(AttackConfig, preset)(name, **overrides) for name in args.attacks or ["gm"])
        if args.transfer:
            attacks = tuple(a.for_setting("transfer") for a in attacks)
        config = StudyConfig.full(args.dataset, _recipe(args)) if args.full else StudyConfig.quick(args.dataset)
    data = prepare_data(config.trajectory, data_dir=args.data_dir, download=args.download)
    target = config.target_class if args.target_class is None else _class(data, args.target_class)
    poison = config.poison_class if args.poison_class is None else _class(data, args.poison_class)
    extra = {
        k: v
        for k, v in (("victims", args.victims), ("per_bucket", args.per_bucket), ("extremes", args.extremes))
        if v is not None
    }
    trajectory = dataclasses.replace(config.trajectory, train=_fast(config.trajectory.train, args))
    victim = None if config.victim is None else _fast(config.victim, args)
    config = dataclasses.replace(
        config, attacks=attacks, target_class=target, poison_class=poison, trajectory=trajectory, victim=victim, **extra
    )
    client = _client(args)
    try:
        result = run_study(
            config,
            data=data,
            device=args.device,
            results_dir=args.results_dir,
            show_progress=not args.no_progress,
            client=client,
        )
    finally:
        if client is not None:
            client.close()
    rows = result.per_target()
    columns = [
        "label",
        "bucket",
        "index",
        "epa",
        "dps",
        "delta_step",
        "delta_param",
        "tau",
        "victims",
        "asr",
        "asr_low",
        "asr_high",
        "clean_accuracy",
    ]
    out = Path(args.out)
    atomic_write_csv(out, rows, columns, ignore_extra=True)
    print(
        format_table(
            result.by_bucket(),
            ["label", "bucket", "targets", "mean_asr", "std_asr", "pooled_low", "pooled_high", "clean_accuracy"],
        )
    )
    print(format_table(result.correlations(), CORRELATION_COLUMNS))
    print(f"{out}: {len(rows)} rows (target x attack); the study's log and poisons are in {result.path}")
    return 0


def _recipe(args: argparse.Namespace) -> str:
    """The EPA recipe asked for; the authors' recipes are a full-mode protocol."""
    if args.recipe != "victims" and not args.full:
        raise PoisonDiffError(f"--recipe {args.recipe} selects the authors' full-scale protocol; add --full")
    return args.recipe


def _trajectory(args: argparse.Namespace, **overrides):
    from .config import TrajectoryConfig

    if args.full:
        return TrajectoryConfig.full(args.dataset, _recipe(args), **overrides)
    _recipe(args)
    return TrajectoryConfig.quick(args.dataset, **overrides)


def _course(args: argparse.Namespace) -> int:
    from . import course

    if args.action == "release":
        assignments = course.release(args.dir, args.only, args.notebooks)
        print(
            f"released {len(assignments)} assignment(s) with nbgrader into {Path(args.dir) / 'release'}: "
            f"{', '.join(a.name for a in assignments)}; what to do next: {Path(args.dir) / 'README.md'}"
        )
        return 0
    out = _check_out(args.out)
    rows = course.grade(args.dir, out, args.only)
    totals: dict[str, list[float]] = {}
    for row in rows:
        got = totals.setdefault(row["student"], [0.0, 0.0])
        got[0], got[1] = got[0] + row["points"], got[1] + row["max_points"]
    for student, (points, most) in totals.items():
        print(f"  {student:20s} {points:g} / {most:g}")
    print(f"wrote {len(rows)} rows to {out}")
    return 0


def _site(args: argparse.Namespace) -> int:
    from .site import build_site

    index = build_site(args.notebooks, args.out)
    print(f"built the site: open {index} in a browser")
    return 0


def _explore(args: argparse.Namespace) -> int:
    from .explore import serve

    return serve(
        dataset=args.dataset,
        target_class=args.target_class,
        poison_class=args.poison_class,
        results_dir=args.results_dir,
        data_dir=args.data_dir,
        download=args.download,
        port=args.port,
        open_browser=not args.no_browser,
    )


COMMANDS = {
    "tutorial": _tutorial,
    "epa": _epa,
    "metrics": _metrics,
    "study": _study,
    "course": _course,
    "site": _site,
    "explore": _explore,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except PoisonDiffError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished runs are saved; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
