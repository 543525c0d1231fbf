"""The ``poisondiff`` command line's arguments: every subcommand, its options and their help."""

from __future__ import annotations

import argparse

from .utils import project_root

DESCRIPTION = "Command line: poisondiff tutorial, epa, metrics, study and course."
NOTEBOOKS_HELP = "folder of the numbered notebooks (default: notebooks/ of the checkout, else the installed copy)"


def data_options(parser: argparse.ArgumentParser, full_help: str) -> None:
    """The options every experiment command shares: which data, which mode, which device, progress bars."""
    parser.add_argument("--dataset", default="cifar10", help='"cifar10" | "tinyimagenet" (or a registered name)')
    parser.add_argument("--full", action="store_true", help=full_help)
    parser.add_argument(
        "--recipe",
        choices=("victims", "authors"),
        default="victims",
        help='with --full: EPA runs trained as the victims ("victims", default) or with the authors\' '
        'EPA-ranking recipes and models ("authors")',
    )
    parser.add_argument("--data-dir", default=None, help="dataset folder (else $POISONDIFF_DATA, else data/)")
    parser.add_argument("--download", action="store_true", help="download the dataset when missing")
    parser.add_argument("--device", default="auto", help='"auto" | "cpu" | "cuda"')
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=False,
        metavar="MODE",
        help='torch.compile the models, optionally in a mode such as "reduce-overhead" (speed only)',
    )
    parser.add_argument(
        "--stack",
        type=int,
        default=1,
        help="train this many runs/victims at once as one grouped network (speed only; for a GPU)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``poisondiff`` parser; ``args.command`` names the subcommand (`cli.COMMANDS` runs it)."""
    parser = argparse.ArgumentParser(prog="poisondiff", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)

    tut = sub.add_parser("tutorial", help="execute every notebook headlessly with papermill")
    tut.add_argument("--full", action="store_true", help="paper settings (needs a GPU); default is quick mode")
    tut.add_argument("--out", default=str(project_root() / "build" / "notebooks"), help="folder for executed notebooks")
    tut.add_argument("--notebooks", default=None, help=NOTEBOOKS_HELP)
    tut.add_argument("--only", nargs="*", help="run only notebooks whose name starts with these prefixes (e.g. 00 02)")
    tut.add_argument("--device", default=None, help='"auto" | "cpu" | "cuda"')
    tut.add_argument("--log-output", action="store_true", help="stream cell output to the terminal")
    tut.add_argument("--no-progress", action="store_true", help="no progress bars")
    epa = sub.add_parser("epa", help="record clean trajectories and write EPA, soft EPA and DPS to a CSV")
    data_options(epa, "paper settings (M=8, 40 epochs, ResNet-18/VGG-16)")
    epa.add_argument("--runs", type=int, default=None, help="override M, the number of clean runs")
    epa.add_argument("--trajectory", default=None, help="trajectory .npz path (default: under results/)")
    epa.add_argument(
        "--keep-models",
        action="store_true",
        help="also save each run's final weights (δ and τ use run 0's; `metrics` and `study` save it "
        "themselves when missing)",
    )
    epa.add_argument("--out", default="results/epa.csv", help="CSV to write")
    met = sub.add_parser("metrics", help="EPA, DPS, δ and τ of chosen targets to a CSV (resumable)")
    data_options(met, "paper settings (M=8, 40 epochs, ResNet-18/VGG-16)")
    met.add_argument("--runs", type=int, default=None, help="override M, the number of clean runs")
    met.add_argument("--epochs", type=int, default=None, help="override the epochs of each clean run")
    met.add_argument("--seed", type=int, default=None, help="seed of the first clean run")
    met.add_argument("--target-class", default="0", help="class whose EPA buckets give the targets (name or index)")
    met.add_argument("--per-bucket", type=int, default=10, help="targets per EPA bucket")
    met.add_argument("--indices", type=int, nargs="+", default=None, help="explicit test indices instead of buckets")
    met.add_argument("--poison-class", nargs="*", default=["all"], help='poison classes (names or indices) or "all"')
    met.add_argument("--last-layer", action="store_true", help="δ and τ over the last layer only")
    met.add_argument("--tau-batches", type=int, default=50, help="batches estimating g(D_c; w_p)")
    met.add_argument("--tau-batch-size", type=int, default=256, help="their size")
    met.add_argument("--variant", default="derived", help='Lambert-W argument: "derived" (C-1)/e or "authors" C-1/e')
    met.add_argument("--out", default="results/metrics.csv", help="CSV to write (rows already there are kept)")
    sty = sub.add_parser("study", help="craft poisons, retrain victims, and relate ASR to EPA, δ and τ (resumable)")
    data_options(sty, "the paper's protocol (needs a GPU); default is quick mode")
    sty.add_argument(
        "--lab",
        action="store_true",
        help="the laptop-scale preset where attacks succeed on easy targets (CPU, an hour or two)",
    )
    sty.add_argument(
        "--attacks",
        nargs="+",
        default=None,
        help='attacks to run: "gm", "bp", "fc" (default: gm; with --lab, the preset\'s)',
    )
    sty.add_argument("--transfer", action="store_true", help="victims train a linear head on frozen features")
    sty.add_argument("--budget", type=float, default=None, help="poisons as a fraction of the training set")
    sty.add_argument("--poisons", type=int, default=None, help="an absolute number of poisons instead")
    sty.add_argument("--eps", type=float, default=None, help="l-inf radius in pixel levels (16 means 16/255)")
    sty.add_argument("--steps", type=int, default=None, help="crafting steps per restart")
    sty.add_argument("--restarts", type=int, default=None, help="crafting restarts")
    sty.add_argument(
        "--target-class",
        default=None,
        help="class of the targets (name or index; default: the preset's, class 0 but for --lab tinyimagenet)",
    )
    sty.add_argument("--poison-class", default=None, help="the attacker's class (name or index; default: the preset's)")
    sty.add_argument("--per-bucket", type=int, default=None, help="targets per EPA bucket")
    sty.add_argument("--extremes", type=int, default=None, help="also this many lowest- and highest-δ targets")
    sty.add_argument("--victims", type=int, default=None, help="victims retrained per (target, attack)")
    sty.add_argument("--results-dir", default=None, help="results folder (else $POISONDIFF_RESULTS, else results/)")
    sty.add_argument("--out", default="results/study.csv", help="per-target CSV to write")
    sty.add_argument(
        "--workers",
        type=int,
        default=None,
        help="run crafting and victims on a local Dask cluster of N one-thread processes (needs the "
        "cluster extra; pays with a GPU per worker, not on a 2-core laptop)",
    )
    sty.add_argument("--scheduler", default=None, help="run them on an existing Dask scheduler (tcp://host:8786)")
    course_options(sub)
    web = sub.add_parser("site", help="the tutorial as a static website (Sphinx, MyST-NB) from executed notebooks")
    web.add_argument(
        "--notebooks",
        default=str(project_root() / "build" / "notebooks"),
        help="folder of executed notebooks (default: what `poisondiff tutorial` wrote)",
    )
    web.add_argument("--out", default=str(project_root() / "build" / "site"), help="folder for the HTML site")
    exp = sub.add_parser("explore", help="the target explorer as a web page (Voilà) on saved results")
    exp.add_argument("--dataset", default="cifar10", help='"cifar10" | "tinyimagenet": whose saved runs to explore')
    exp.add_argument("--target-class", default="airplane", help="the class the explorer starts with")
    exp.add_argument("--poison-class", default="automobile", help="the class τ is computed toward")
    exp.add_argument("--results-dir", default=None, help="results folder (else $POISONDIFF_RESULTS, else results/)")
    exp.add_argument("--data-dir", default=None, help="dataset folder (else $POISONDIFF_DATA, else data/)")
    exp.add_argument("--download", action="store_true", help="download the dataset when missing")
    exp.add_argument("--port", type=int, default=8866, help="localhost port of the page")
    exp.add_argument("--no-browser", action="store_true", help="do not open a browser tab")
    return parser


def course_options(sub) -> None:
    """``poisondiff course release DIR`` and ``poisondiff course grade DIR`` (nbgrader; the ``course`` extra)."""
    course = sub.add_parser("course", help="coursework with nbgrader: release the notebooks, grade submissions")
    actions = course.add_subparsers(dest="action", required=True)
    rel = actions.add_parser("release", help="write an nbgrader course folder: source/, release/ and a README")
    rel.add_argument("dir", help="the course folder (created if missing)")
    rel.add_argument("--only", nargs="+", help="release only notebooks whose name starts with these (e.g. 05 06)")
    rel.add_argument("--notebooks", default=None, help=NOTEBOOKS_HELP)
    grd = actions.add_parser("grade", help="autograde submitted/<student>/<assignment>/ with nbgrader")
    grd.add_argument("dir", help="the course folder `course release` wrote")
    grd.add_argument("--only", nargs="+", help="grade only assignments whose name starts with these")
    grd.add_argument("--out", default="grades.csv", help="CSV to write: one row per student and exercise")
