"""Command line: ``poisondiff tutorial`` (run every notebook headlessly), ``poisondiff epa`` (EPA to CSV),
``poisondiff metrics`` (EPA, DPS, δ and τ of chosen targets to CSV) and ``poisondiff study`` (attack validation).

Errors the user can fix are printed as one line (``error: ...``) with exit code 2, never as a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

from .errors import PoisonDiffError
from .utils import atomic_write_csv, check_writable, project_root

CORRELATION_COLUMNS = ["label", "metric_label", "n", "successes", "pearson", "pearson_p", "spearman", "spearman_p",
                       "auroc", "auroc_low", "auroc_high"]


def _class(data, text: str) -> int:
    """A class given on the command line as an index or a name."""
    return data.class_index(int(text) if str(text).isdigit() else text)


def _fast(train, args: argparse.Namespace):
    """`train` (a `TrainConfig`) with the command line's speed options; they leave the experiment's identity alone."""
    return dataclasses.replace(train, compile=args.compile, stack=args.stack)


KERNEL_QUIET = ["--log-level=ERROR"]  # silences the kernel's "TCP without encryption" warning, once per notebook


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
            pm.execute_notebook(str(nb), str(target), parameters=parameters, cwd=str(nb.parent), kernel_name="python3",
                                progress_bar=not args.no_progress, log_output=args.log_output,
                                extra_arguments=KERNEL_QUIET)
        except pm.PapermillExecutionError as exc:
            raise PoisonDiffError(f"{nb.name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue}. "
                                  f"The executed notebook with the full traceback is {target}.") from exc
        print(f"  {nb.name:45s} {time.perf_counter() - start:7.1f} s  -> {target}")
    print(f"done in {(time.perf_counter() - began) / 60:.1f} min: open the executed notebooks in JupyterLab "
          f"(jupyter lab {out_dir})")
    return 0


def _epa(args: argparse.Namespace) -> int:
    from .metrics import trajectory_metrics
    from .record import record_trajectories

    config = _trajectory(args, **({"runs": args.runs} if args.runs is not None else {}))
    config = dataclasses.replace(config, train=_fast(config.train, args))
    check_writable(Path(args.out).parent)  # before the training, not after it
    traj = record_trajectories(config, data_dir=args.data_dir, download=args.download, device=args.device,
                               show_progress=not args.no_progress, path=args.trajectory,
                               keep_models=args.keep_models)
    scores = trajectory_metrics(traj)
    out = Path(args.out)
    rows = [{"index": int(scores["indices"][i]), "label": int(scores["labels"][i]), "epa": f"{scores['epa'][i]:.6f}",
             "soft_epa": f"{scores['soft_epa'][i]:.6f}", "dps": f"{scores['dps'][i]:.6f}",
             "dominant": int(scores["dominant"][i])} for i in range(len(scores["epa"]))]
    atomic_write_csv(out, rows, ["index", "label", "epa", "soft_epa", "dps", "dominant"])
    print(f"wrote {len(scores['epa'])} rows to {out} ({traj.completed} runs x {traj.num_epochs} epochs)")
    return 0


def _metrics(args: argparse.Namespace) -> int:
    from .metrics_table import target_metrics_csv
    from .record import prepare_data

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
    rows = target_metrics_csv(config, args.out, target_class=target, per_bucket=args.per_bucket,
                              indices=args.indices, poison_classes=poison, last_layer_only=args.last_layer,
                              tau_batches=args.tau_batches, tau_batch_size=args.tau_batch_size, variant=args.variant,
                              data=data, device=args.device, show_progress=not args.no_progress)
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
    overrides = {k: v for k, v in (("budget", args.budget), ("num_poisons", args.poisons),
                                   ("steps", args.steps), ("restarts", args.restarts)) if v is not None}
    if args.eps is not None:
        check_positive("eps (in pixel levels)", args.eps)
        overrides["eps"] = args.eps / 255
    _recipe(args)
    if args.lab:  # the laptop-scale preset: its own attacks unless --attacks names others
        config = StudyConfig.lab(args.dataset, "transfer" if args.transfer else "scratch")
        chosen = [a for a in config.attacks if a.name in args.attacks] if args.attacks else list(config.attacks)
        missing = [n for n in (args.attacks or []) if n not in {a.name for a in chosen}]
        attacks = tuple(dataclasses.replace(a, **overrides) for a in chosen) + tuple(
            AttackConfig.full(n, **overrides, **({"setting": "transfer"} if args.transfer else {})) for n in missing)
    else:
        preset = "full" if args.full else "quick"
        attacks = tuple(getattr(AttackConfig, preset)(name, **overrides) for name in args.attacks or ["gm"])
        if args.transfer:
            attacks = tuple(a.for_setting("transfer") for a in attacks)
        config = StudyConfig.full(args.dataset, _recipe(args)) if args.full else StudyConfig.quick(args.dataset)
    data = prepare_data(config.trajectory, data_dir=args.data_dir, download=args.download)
    target = config.target_class if args.target_class is None else _class(data, args.target_class)
    poison = config.poison_class if args.poison_class is None else _class(data, args.poison_class)
    extra = {k: v for k, v in (("victims", args.victims), ("per_bucket", args.per_bucket),
                               ("extremes", args.extremes)) if v is not None}
    trajectory = dataclasses.replace(config.trajectory, train=_fast(config.trajectory.train, args))
    victim = None if config.victim is None else _fast(config.victim, args)
    config = dataclasses.replace(config, attacks=attacks, target_class=target, poison_class=poison,
                                 trajectory=trajectory, victim=victim, **extra)
    client = _client(args)
    try:
        result = run_study(config, data=data, device=args.device, results_dir=args.results_dir,
                           show_progress=not args.no_progress, client=client)
    finally:
        if client is not None:
            client.close()
    rows = result.per_target()
    columns = ["label", "bucket", "index", "epa", "dps", "delta_step", "delta_param", "tau", "victims", "asr",
               "asr_low", "asr_high", "clean_accuracy"]
    out = Path(args.out)
    atomic_write_csv(out, rows, columns, ignore_extra=True)
    print(format_table(result.by_bucket(), ["label", "bucket", "targets", "mean_asr", "std_asr", "pooled_low",
                                            "pooled_high", "clean_accuracy"]))
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


def _data_options(parser: argparse.ArgumentParser, full_help: str) -> None:
    """The options every experiment command shares: which data, which mode, which device, progress bars."""
    parser.add_argument("--dataset", default="cifar10", help='"cifar10" | "tinyimagenet" (or a registered name)')
    parser.add_argument("--full", action="store_true", help=full_help)
    parser.add_argument("--recipe", choices=("victims", "authors"), default="victims",
                        help='with --full: EPA runs trained as the victims ("victims", default) or with the authors\' '
                             'EPA-ranking recipes and models ("authors")')
    parser.add_argument("--data-dir", default=None, help="dataset folder (else $POISONDIFF_DATA, else data/)")
    parser.add_argument("--download", action="store_true", help="download the dataset when missing")
    parser.add_argument("--device", default="auto", help='"auto" | "cpu" | "cuda"')
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--compile", nargs="?", const=True, default=False, metavar="MODE",
                        help='torch.compile the models, optionally in a mode such as "reduce-overhead" (speed only)')
    parser.add_argument("--stack", type=int, default=1,
                        help="train this many runs/victims at once as one grouped network (speed only; for a GPU)")


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
    _data_options(epa, "paper settings (M=8, 40 epochs, ResNet-18/VGG-16)")
    epa.add_argument("--runs", type=int, default=None, help="override M, the number of clean runs")
    epa.add_argument("--trajectory", default=None, help="trajectory .npz path (default: under results/)")
    epa.add_argument("--keep-models", action="store_true",
                     help="also save each run's final weights (δ and τ use run 0's; `metrics` and `study` save it "
                          "themselves when missing)")
    epa.add_argument("--out", default="results/epa.csv", help="CSV to write")
    epa.set_defaults(func=_epa)

    met = sub.add_parser("metrics", help="EPA, DPS, δ and τ of chosen targets to a CSV (resumable)")
    _data_options(met, "paper settings (M=8, 40 epochs, ResNet-18/VGG-16)")
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
    met.add_argument("--out", default="results/metrics.csv", help="CSV to write (rows already there are kept)")
    met.set_defaults(func=_metrics)

    sty = sub.add_parser("study", help="craft poisons, retrain victims, and relate ASR to EPA, δ and τ (resumable)")
    _data_options(sty, "the paper's protocol (needs a GPU); default is quick mode")
    sty.add_argument("--lab", action="store_true",
                     help="the laptop-scale preset where attacks succeed on easy targets (CPU, an hour or two)")
    sty.add_argument("--attacks", nargs="+", default=None,
                     help='attacks to run: "gm", "bp", "fc" (default: gm; with --lab, the preset\'s)')
    sty.add_argument("--transfer", action="store_true", help="victims train a linear head on frozen features")
    sty.add_argument("--budget", type=float, default=None, help="poisons as a fraction of the training set")
    sty.add_argument("--poisons", type=int, default=None, help="an absolute number of poisons instead")
    sty.add_argument("--eps", type=float, default=None, help="l-inf radius in pixel levels (16 means 16/255)")
    sty.add_argument("--steps", type=int, default=None, help="crafting steps per restart")
    sty.add_argument("--restarts", type=int, default=None, help="crafting restarts")
    sty.add_argument("--target-class", default=None,
                     help="class of the targets (name or index; default: the preset's, class 0 but for --lab "
                          "tinyimagenet)")
    sty.add_argument("--poison-class", default=None, help="the attacker's class (name or index; default: the preset's)")
    sty.add_argument("--per-bucket", type=int, default=None, help="targets per EPA bucket")
    sty.add_argument("--extremes", type=int, default=None, help="also this many lowest- and highest-δ targets")
    sty.add_argument("--victims", type=int, default=None, help="victims retrained per (target, attack)")
    sty.add_argument("--results-dir", default=None, help="results folder (else $POISONDIFF_RESULTS, else results/)")
    sty.add_argument("--out", default="results/study.csv", help="per-target CSV to write")
    sty.add_argument("--workers", type=int, default=None,
                     help="run crafting and victims on a local Dask cluster of N one-thread processes (needs the "
                          "cluster extra; pays with a GPU per worker, not on a 2-core laptop)")
    sty.add_argument("--scheduler", default=None, help="run them on an existing Dask scheduler (tcp://host:8786)")
    sty.set_defaults(func=_study)
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
