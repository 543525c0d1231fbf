"""Benchmark poisondiff_lite against naive baselines, measured in the same process and run.

    python benchmarks/run.py                 # GPU: full CIFAR-10 sizes; CPU: a scaled-down quick mode
    python benchmarks/run.py --quick         # force the small sizes (a few minutes on 2 CPU cores)
    python benchmarks/run.py --compile       # also try torch.compile for the training runs
    python benchmarks/run.py --jobs train,delta   # only some jobs (a GPU run split over several calls)
    python benchmarks/run.py --jobs train --models fast --compile   # the train job for one network only
    python benchmarks/run.py --demands       # what the H100 targets demand (arithmetic; no timing, any machine)

Each line times one job of the tutorial with the package and with a naive baseline doing the same work:

- training: our loop (uint8 data on the device, batched on-device crop + flip, bf16 autocast and channels_last on CUDA)
  against a plain torchvision `DataLoader` with per-image transforms and an fp32 loop; same model, optimiser, schedule;
- recording: the recorder's overhead on top of a clean run (evaluating the whole test split after every epoch);
- EPA/DPS: the vectorised metrics against a per-example Python loop;
- stacking: the same EPA experiment and validation with several runs trained at once as one grouped network
  (`TrainConfig(stack=V)`), against one at a time;
- δ: `distance_matrix` (all pairs in lockstep with torch.func) against the per-target `poisoning_distance` loop;
- one gradient-matching crafting, and one validation (V victims retrained from scratch);
- a quick study on a local Dask cluster (2 one-thread workers) against the same study run serially;
- full mode's cost (``--jobs full``): a few epochs of every full-mode recipe (CIFAR-10 and TinyImageNet, ours and
  the authors') and one restart of its crafting, timed and scaled to the whole EPA experiment and study.

Results go to stdout as a table and to ``benchmarks/measured/<device>-<date>.json``. Speed-ups are baseline / ours.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2 as T
from torch.utils.data import DataLoader, Dataset

import poisondiff_lite as pdl
from poisondiff_lite.attacks import AttackConfig, craft, poison_indices
from poisondiff_lite.distance import distance_matrix, poisoning_distance
from poisondiff_lite.metrics import dps, epa
from poisondiff_lite.train import lr_factor, make_optimizer
from poisondiff_lite.utils import atomic_write_json
from poisondiff_lite.victims import scratch_victims

HERE = Path(__file__).resolve().parent
BF16_PEAK = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12, "A10": 125e12}  # dense TFLOP/s


# -----------------------------------------------------------------------------------------------------------------
#  helpers
# -----------------------------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: torch.device):
    sync(device)
    start = time.perf_counter()
    out = fn()
    sync(device)
    return time.perf_counter() - start, out


class NaiveCifar(Dataset):
    """What a first tutorial does: a Dataset over numpy images, torchvision transforms per image."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, cfg: pdl.TrainConfig) -> None:
        self.images = images.cpu().permute(0, 2, 3, 1).numpy()
        self.labels = labels.cpu().numpy()
        steps = [T.ToImage()]
        if cfg.crop_padding:
            steps.append(T.RandomCrop(images.shape[-1], padding=cfg.crop_padding))
        if cfg.flip:
            steps.append(T.RandomHorizontalFlip())
        steps.append(T.ToDtype(torch.float32, scale=True))
        self.transform = T.Compose(steps)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), int(self.labels[i])


def naive_train(
    data: pdl.DataBundle, cfg: pdl.TrainConfig, epochs: int, device: torch.device, seed: int = 0, workers: int = 2
) -> float:
    """fp32, DataLoader with per-image transforms; returns seconds per epoch."""
    torch.manual_seed(seed)
    model = pdl.build_model(cfg.model, data.num_classes, mean=data.mean, std=data.std).to(device)
    loader = DataLoader(
        NaiveCifar(data.train.images, data.train.labels, cfg),
        batch_size=cfg.batch_size,
        shuffle=True,
        num_workers=workers,
        drop_last=False,
        persistent_workers=workers > 0,
        pin_memory=device.type == "cuda",
    )
    optimizer = make_optimizer(model, cfg)
    steps = len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(cfg, s, steps))
    model.train()

    def run():
        for _ in range(epochs):
            for x, y in loader:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if len(y) < 2:
                    continue
                loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()

    seconds, _ = timed(run, device)
    return seconds / epochs


def flops_per_image(
    model: torch.nn.Module, shape: tuple[int, ...], device: torch.device, *, backward: bool = True
) -> float:
    """FLOPs of one image: forward + backward (a training step), or forward only (torch.utils.flop_counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(8, *shape, device=device)
    model = model.to(device).train()
    counter = FlopCounterMode(display=False)
    with counter:
        out = model(x).sum()
        if backward:
            out.backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops() / 8


FULL_SIZES = (50_000, 10_000)  # CIFAR-10's train and test splits

# issue 5's H100 targets that follow from arithmetic: (job, recipe, runs, test images evaluated per epoch, seconds)
TARGETS = (
    ("clean run, fast network (TrainConfig.fast)", pdl.TrainConfig.fast(), 1, 0, 5.0),
    ("clean run, ResNet-18, 40 epochs", pdl.TrainConfig.full(), 1, 0, 60.0),
    ("EPA: 8 runs x 40 epochs, fast network, recorded", pdl.TrainConfig.fast(epochs=40), 8, 10_000, 60.0),
)


def target_demands(
    flops=flops_per_image,
    train_images: int = FULL_SIZES[0],
    peak: float = BF16_PEAK["H100"],
    shape: tuple[int, ...] = (3, 32, 32),
) -> list[dict]:
    """What each target asks of the GPU: total FLOPs, the share of the bf16 peak it needs, the time per step it allows.

    Arithmetic, not a measurement: it says which targets are compute-bound (a large share of the peak) and which are
    bound by per-step overhead (a few ms per optimiser step), i.e. what the GPU run will test.
    """
    rows = []
    for job, cfg, runs, eval_images, seconds in TARGETS:
        model = pdl.build_model(cfg.model, 10)
        train = flops(model, shape, torch.device("cpu"))
        forward = flops(model, shape, torch.device("cpu"), backward=False) if eval_images else 0.0
        total = runs * cfg.epochs * (train_images * train + eval_images * forward)
        steps = runs * cfg.epochs * math.ceil(train_images / cfg.batch_size)
        rows.append(
            {
                "job": job,
                "target_s": seconds,
                "pflop": total / 1e15,
                "tflop_per_s": total / seconds / 1e12,
                "peak_share": total / seconds / peak,
                "steps": steps,
                "ms_per_step": 1000 * seconds / steps,
            }
        )
    return rows


def print_demands() -> None:
    print(
        f"what issue 5's H100 targets demand ({FULL_SIZES[0]:,} training images; bf16 dense peak "
        f"{BF16_PEAK['H100'] / 1e12:.0f} TFLOP/s) - arithmetic, not a measurement:"
    )
    for row in target_demands():
        print(
            f"  {row['job']:50s} <= {row['target_s']:4.0f} s: {row['pflop']:6.2f} PFLOP -> "
            f"{row['tflop_per_s']:5.0f} TFLOP/s = {100 * row['peak_share']:4.1f} % of peak; "
            f"{row['steps']:6d} steps -> <= {row['ms_per_step']:.2f} ms/step"
        )


def tiled(data: pdl.DataBundle, train: int, test: int) -> pdl.DataBundle:
    """`data` with each split repeated (in order) up to `train` / `test` images."""

    def repeat(split: pdl.ImageDataset, n: int) -> pdl.ImageDataset:
        return split.subset(np.arange(n) % len(split))

    return dataclasses.replace(data, train=repeat(data.train, train), test=repeat(data.test, test))


def cpu_model() -> str:
    """The processor's model name and its widest vector extension (machines differ by 3x or more on one line)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or "unknown"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    vector = "AVX-512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "no AVX2"
    return f"{name or platform.processor() or 'unknown'}, {vector}"


def peak_of(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in BF16_PEAK.items() if k in name), None)


# -----------------------------------------------------------------------------------------------------------------
#  the benchmark
# -----------------------------------------------------------------------------------------------------------------
JOBS = ("train", "record", "metrics", "delta", "gm", "validation", "cluster", "full", "tutorial")
DEFAULT_JOBS = JOBS[:-1]  # the tutorial job runs only when asked for (minutes of notebooks)
NOTEBOOKS = HERE.parent / "notebooks"
FAST_LINE = "train fast network"  # the start of the fast-net line's job name: the unit of the tutorial's ratio


def time_tutorial(data_dir: str | None) -> tuple[float, dict[str, float]]:
    """Wall time of ``poisondiff tutorial`` (quick mode) as a new user runs it: a fresh results folder and a fresh
    decoded-image cache, nothing carried over; also each notebook's time as the command prints it."""
    with tempfile.TemporaryDirectory(prefix="poisondiff-tutorial-") as tmp:
        env = {
            **os.environ,
            "POISONDIFF_RESULTS": f"{tmp}/results",
            "POISONDIFF_CACHE": f"{tmp}/cache",
            "POISONDIFF_QUICK": "1",
            "MPLBACKEND": "agg",
            "TQDM_DISABLE": "1",
        }
        if data_dir:
            env["POISONDIFF_DATA"] = str(data_dir)
        command = [sys.executable, "-c", "import sys; from poisondiff_lite.cli import main; sys.exit(main())"]
        command += ["tutorial", "--notebooks", str(NOTEBOOKS), "--out", f"{tmp}/notebooks", "--no-progress"]
        start = time.perf_counter()
        done = subprocess.run(command, env=env, capture_output=True, text=True)
        seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"poisondiff tutorial failed: {(done.stderr or done.stdout).strip()[-500:]}")
    per_notebook = {
        m.group(1): float(m.group(2)) for m in re.finditer(r"^\s+(\d\d_\S+)\.ipynb\s+([\d.]+) s", done.stdout, re.M)
    }
    return seconds, per_notebook


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto", help='"auto" | "cpu" | "cuda"')
    parser.add_argument("--quick", action="store_true", help="small sizes (the default on a CPU)")
    parser.add_argument("--data-dir", default=None, help="dataset folder (else $POISONDIFF_DATA, else data/)")
    parser.add_argument(
        "--compile",
        nargs="?",
        const=True,
        default=False,
        metavar="MODE",
        help='also time torch.compile\'d training (optionally in a mode, e.g. "reduce-overhead")',
    )
    parser.add_argument(
        "--stack",
        type=int,
        default=0,
        help="runs/victims per grouped network in the stacked lines (default: all of them)",
    )
    parser.add_argument(
        "--jobs",
        default=",".join(DEFAULT_JOBS),
        help=f"comma-separated subset of {','.join(JOBS)} (default: all but tutorial), e.g. to split a long GPU run; "
        "tutorial: the fast-net line, then the whole quick tutorial, and their ratio",
    )
    parser.add_argument(
        "--models",
        default="fast,resnet",
        help='comma-separated networks for the train job: "fast", "resnet" (default: both)',
    )
    parser.add_argument("--out", default=None, help="JSON file (default benchmarks/measured/<device>-<date>.json)")
    parser.add_argument(
        "--demands",
        action="store_true",
        help="only print what the H100 targets demand (FLOPs, share of peak, ms per step) and exit",
    )
    args = parser.parse_args(argv)
    if args.demands:
        print_demands()
        return 0
    jobs = [j.strip() for j in args.jobs.split(",") if j.strip()]
    unknown = sorted(set(jobs) - set(JOBS))
    if unknown:
        parser.error(f"unknown job(s) {', '.join(unknown)}; choose from {', '.join(JOBS)}")
    device = pdl.get_device(args.device)
    quick = args.quick or device.type != "cuda"
    data = pdl.load_dataset("cifar10", args.data_dir)
    tiled_from = None
    if not quick and len(data.train) < FULL_SIZES[0]:
        # a subset (e.g. carried to a GPU machine without internet): repeat it to CIFAR-10's full sizes, since the
        # timings depend on how many images pass, not on which (accuracies are then not comparable to the paper's)
        tiled_from = (len(data.train), len(data.test))
        data = tiled(data, *FULL_SIZES)
    data = data.to(device)
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({platform.processor() or 'cpu'}, {torch.get_num_threads()} threads)"
    )
    print(
        f"device: {name} | torch {torch.__version__} | data: {len(data.train)} train / {len(data.test)} test"
        f"{f' (a {tiled_from[0]} / {tiled_from[1]} subset repeated)' if tiled_from else ''} | "
        f"{'quick' if quick else 'full'} sizes",
        flush=True,
    )
    out = (
        Path(args.out)
        if args.out
        else HERE / "measured" / f"{'cuda' if device.type == 'cuda' else 'cpu'}-{dt.date.today().isoformat()}.json"
    )
    rows: list[dict] = []

    def report(job: str, ours: float, baseline: float | None, unit: str = "s", **extra) -> None:
        row = {
            "job": job,
            "ours": ours,
            "baseline": baseline,
            "unit": unit,
            "speedup": (baseline / ours) if baseline and ours else None,
            **extra,
        }
        rows.append(row)
        speed = f"x{row['speedup']:.1f}" if row["speedup"] else "-"
        base = f"{baseline:10.3f}" if baseline is not None else f"{'-':>10s}"
        more = "  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in extra.items())
        print(f"  {job:46s} ours {ours:10.3f} {unit:3s} baseline {base} {unit:3s} {speed:>7s}  {more}", flush=True)
        # rewritten after every line: a run cut short (a time limit) keeps what it measured
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(
            out,
            {
                "device": name,
                "cpu": cpu_model(),
                "torch": torch.__version__,
                "date": dt.datetime.now().isoformat(),
                "quick": quick,
                "tiled_from": tiled_from,
                "python": sys.version.split()[0],
                "rows": rows,
            },
        )

    fast_cfg = pdl.TrainConfig.quick(epochs=2) if quick else pdl.TrainConfig.fast()
    resnet_cfg = pdl.TrainConfig.full(epochs=1 if quick else 40)
    peak = peak_of(device)
    trained: dict[str, torch.nn.Module] = {}
    naive_run: dict[str, float] = {}

    def fast_model() -> torch.nn.Module:
        """The fast network trained once (by the train job, or here when that job was left out)."""
        if "fast network" not in trained:
            trained["fast network"] = pdl.train_fresh(data, fast_cfg, seed=0, device=device, show_progress=False)[0]
        return trained["fast network"].eval()

    def naive_fast_run() -> float:
        if "fast network" not in naive_run:
            naive_run["fast network"] = naive_train(data, fast_cfg, 1 if quick else 2, device) * fast_cfg.epochs
        return naive_run["fast network"]

    # 1. clean training, fast network and ResNet-18 ---------------------------------------------------------------
    if "train" in jobs:
        wanted = {m.strip() for m in args.models.split(",") if m.strip()}
        if not wanted <= {"fast", "resnet"}:
            parser.error(f"unknown model(s) in --models {args.models!r}; choose from fast, resnet")
        for label, cfg in (("fast network", fast_cfg), ("ResNet-18", resnet_cfg)):
            if ("fast" if cfg is fast_cfg else "resnet") not in wanted:
                continue
            seconds, (model, history) = timed(
                lambda cfg=cfg: pdl.train_fresh(data, cfg, seed=0, device=device, show_progress=False), device
            )
            trained[label] = model
            naive_run[label] = naive_train(data, cfg, 1 if quick else min(2, cfg.epochs), device) * cfg.epochs
            images_per_s = len(data.train) * cfg.epochs / seconds
            extra = {
                "epochs": cfg.epochs,
                "img_per_s": images_per_s,
                "test_acc": pdl.accuracy(model, data.test, device=device),
            }
            flops = flops_per_image(pdl.build_model(cfg.model, 10), tuple(data.train.images.shape[1:]), device)
            if peak:
                extra["bf16_peak_share"] = flops * images_per_s / peak
            report(f"train {label} ({cfg.epochs} ep, {len(data.train)} img)", seconds, naive_run[label], **extra)
            if args.compile:
                compiled_cfg = dataclasses.replace(cfg, compile=args.compile)
                warm, _ = timed(
                    lambda: pdl.train_fresh(data, compiled_cfg, seed=1, device=device, show_progress=False), device
                )
                again, _ = timed(
                    lambda: pdl.train_fresh(data, compiled_cfg, seed=2, device=device, show_progress=False), device
                )
                mode = f" {args.compile}" if isinstance(args.compile, str) else ""
                report(
                    f"  ...torch.compile{mode} (2nd run; 1st {warm:.1f} s)",
                    again,
                    seconds,
                    img_per_s=len(data.train) * cfg.epochs / again,
                )

    # 2. an EPA experiment: the recorder's overhead, and stacking ----------------------------------------------------
    if "record" in jobs:
        runs = 2 if quick else 8
        epa_cfg = fast_cfg if quick else dataclasses.replace(fast_cfg, epochs=40)  # the 8 runs x 40 epochs
        config = pdl.TrajectoryConfig(dataset="cifar10", train=epa_cfg, runs=runs)
        with tempfile.TemporaryDirectory() as folder:
            recorded, traj = timed(
                lambda: pdl.record_trajectories(
                    config, data=data, device=device, show_progress=False, path=Path(folder) / "t.npz"
                ),
                device,
            )
        plain_runs = min(runs, 2)  # the same runs unrecorded, two of them, scaled to all
        plain, _ = timed(
            lambda: [
                pdl.train_fresh(data, epa_cfg, seed=s, device=device, show_progress=False) for s in range(plain_runs)
            ],
            device,
        )
        report(
            f"EPA experiment: {runs} runs x {epa_cfg.epochs} ep, recorded",
            recorded,
            None,
            recorder_overhead=recorded / (plain * runs / plain_runs) - 1,
            examples=traj.num_examples,
        )
        stack = args.stack or runs
        stacked_config = dataclasses.replace(config, train=dataclasses.replace(epa_cfg, stack=stack))
        with tempfile.TemporaryDirectory() as folder:
            stacked_s, stacked_traj = timed(
                lambda: pdl.record_trajectories(
                    stacked_config, data=data, device=device, show_progress=False, path=Path(folder) / "t.npz"
                ),
                device,
            )
        report(
            f"  ...{stack} runs at a time as one grouped network",
            stacked_s,
            recorded,
            pred_agreement=float((stacked_traj.preds == traj.preds).mean()),
        )

    # 3. EPA and DPS over M x N x E -------------------------------------------------------------------------------
    if "metrics" in jobs:
        m, n, e = (8, 40, 10_000)
        rng = np.random.default_rng(0)
        preds = rng.integers(0, 10, size=(m, n, e)).astype(np.int16)
        labels = rng.integers(0, 10, size=e)
        # best of 3: the first call over fresh arrays of this size pays one-off page faults (up to x4 on 2 cores)
        ours_s, (ours_epa, (ours_dps, _)) = min(
            (timed(lambda: (epa(preds, labels), dps(preds, 10)), torch.device("cpu")) for _ in range(3)),
            key=lambda r: r[0],
        )
        subset = e if not quick else 1000

        def naive_metrics():
            out_epa, out_dps = [], []
            for i in range(subset):
                votes = [int(preds[a, b, i]) for a in range(m) for b in range(n)]
                out_epa.append(sum(v == labels[i] for v in votes) / len(votes))
                out_dps.append(Counter(votes).most_common(1)[0][1] / len(votes))
            return out_epa, out_dps

        naive_s, (naive_epa, naive_dps) = timed(naive_metrics, torch.device("cpu"))
        assert np.allclose(naive_epa, ours_epa[:subset]) and np.allclose(naive_dps, ours_dps[:subset])
        report(f"EPA + DPS, {m} x {n} x {e} checkpoints", ours_s, naive_s * e / subset)

    # 4. δ for T targets x 9 poison classes ------------------------------------------------------------------------
    if "delta" in jobs:
        model = fast_model()
        targets = 10 if quick else 100
        images, tlabels = data.test.images[:targets], data.test.labels[:targets]
        ours_s, matrix = timed(
            lambda: distance_matrix(model, images, tlabels, device=device, method="batched", show_progress=False),
            device,
        )
        loop_targets = 2 if quick else 10

        def per_target():
            return [
                [poisoning_distance(model, images[t], c, device=device).step for c in range(10) if c != int(tlabels[t])]
                for t in range(loop_targets)
            ]

        naive_s, steps = timed(per_target, device)
        agree = np.mean(
            [
                abs(a - b) <= 2e-4 or (math.isinf(a) and math.isinf(b))
                for t in range(loop_targets)
                for a, b in zip(steps[t], [matrix.step[t, c] for c in range(10) if c != int(tlabels[t])])
            ]
        )
        report(f"δ matrix, {targets} targets x 9 classes", ours_s, naive_s * targets / loop_targets, agreement=agree)

    # 5. one gradient-matching crafting ----------------------------------------------------------------------------
    if "gm" in jobs:
        model = fast_model()
        attack = AttackConfig.quick("gm", steps=20) if quick else AttackConfig.full("gm")
        idx = poison_indices(data.train.labels, 1, attack.count(len(data.train)))
        seconds, poisons = timed(
            lambda: craft(
                attack,
                model,
                data.test.images[3],
                1,
                data.train.images[idx],
                data.train.labels[idx],
                idx,
                device=device,
            ),
            device,
        )
        report(
            f"GM crafting, {len(idx)} poisons x {attack.steps} steps x {attack.restarts}",
            seconds,
            None,
            poison_steps_per_s=len(idx) * attack.steps * attack.restarts / seconds,
        )

    # 6. one validation: V victims retrained from scratch --------------------------------------------------------
    if "validation" in jobs:
        victims = 2 if quick else 8
        seconds, _ = timed(
            lambda: list(
                scratch_victims(data, data.train, fast_cfg, range(victims), data.test.images[3:4], device=device)
            ),
            device,
        )
        report(f"validation: {victims} victims x {fast_cfg.epochs} ep (fast net)", seconds, naive_fast_run() * victims)
        stacked_cfg = dataclasses.replace(fast_cfg, stack=args.stack or victims)
        stacked_s, _ = timed(
            lambda: list(
                scratch_victims(data, data.train, stacked_cfg, range(victims), data.test.images[3:4], device=device)
            ),
            device,
        )
        report(f"  ...{stacked_cfg.stack} victims at a time as one grouped network", stacked_s, seconds)

    # 7. a study on a local Dask cluster: 2 one-thread workers against the serial study, same run -------------------
    if "cluster" in jobs:
        seconds, baseline, one_thread, same = time_cluster_study(data, device, quick)
        report(
            "study on a local Dask cluster: 2 workers x 1 thread",
            seconds,
            baseline,
            same_results=same,
            serial_one_thread_s=one_thread,
        )

    # 8. full mode's cost: each full recipe timed for a few epochs, its crafting for one restart, then scaled ------
    if "full" in jobs:
        for dataset in ("cifar10", "tinyimagenet"):
            bundle = (
                synthetic_tinyimagenet(device, quick)
                if dataset == "tinyimagenet"
                else tiled(data, 400, 100)
                if quick
                else data
            )  # quick: only checks that every piece runs
            for recipe in ("victims", "authors"):
                label, seconds, extra = full_mode_cost(bundle, dataset, recipe, device, quick)
                report(label, seconds, None, **extra)

    # 9. the quick tutorial as a new user runs it, in units of the fast-net line measured just before ---------------
    if "tutorial" in jobs:
        fast = next((r for r in rows if r["job"].startswith(FAST_LINE)), None)
        if fast is None:  # the same line as the train job's, measured here
            seconds, _ = timed(
                lambda: pdl.train_fresh(data, fast_cfg, seed=0, device=device, show_progress=False), device
            )
            report(f"{FAST_LINE} ({fast_cfg.epochs} ep, {len(data.train)} img)", seconds, None)
            fast = rows[-1]
        seconds, per_notebook = time_tutorial(args.data_dir)
        report(
            "quick tutorial (poisondiff tutorial, fresh results and cache)",
            seconds,
            None,
            fast_line_s=fast["ours"],
            ratio=seconds / fast["ours"],
            notebooks=per_notebook,
        )

    print(f"wrote {out}")
    return 0


def synthetic_tinyimagenet(device: torch.device, quick: bool) -> pdl.DataBundle:
    """Random uint8 images of TinyImageNet's sizes (100,000 train / 10,000 val, 64 x 64, 200 classes; quick: 400 /
    100): the timings depend on how many images pass, not on what they show (the data set is too large to carry)."""
    train, test = (400, 100) if quick else (100_000, 10_000)
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (train + test, 3, 64, 64), dtype=torch.uint8, generator=gen)
    labels = torch.arange(train + test) % 200
    return pdl.DataBundle.from_tensors(
        "tinyimagenet", images[:train], labels[:train], images[train:], labels[train:]
    ).to(device)


def epoch_seconds(
    data: pdl.DataBundle, cfg: pdl.TrainConfig, device: torch.device, epochs: int
) -> tuple[float, torch.nn.Module]:
    """Median wall time of the epochs after the first (which pays cuDNN autotuning and warm-up) of a run of `cfg`."""
    stamps = [time.perf_counter()]

    def stamp(epoch, model):
        sync(device)
        stamps.append(time.perf_counter())

    model, _ = pdl.train_fresh(
        data, dataclasses.replace(cfg, epochs=epochs), seed=0, device=device, on_epoch_end=stamp, show_progress=False
    )
    laps = np.diff(stamps)
    return float(np.median(laps[1:] if len(laps) > 1 else laps)), model


def full_mode_cost(
    data: pdl.DataBundle, dataset: str, recipe: str, device: torch.device, quick: bool
) -> tuple[str, float, dict]:
    """The wall time of `StudyConfig.full(dataset, recipe)` on this device, scaled from measured pieces.

    EPA: runs x epochs x one epoch of the EPA recipe (the recorder adds its own overhead, measured by the record
    job); study: that, plus per target one crafting (one restart timed, times the restarts) and V victims, plus V
    clean victims. δ and τ cost seconds (the delta job) and are left out.
    """
    study = pdl.StudyConfig.full(dataset, recipe)
    epa_cfg, victim_cfg = study.trajectory.train, study.victim_recipe
    epochs = 2 if quick else 3
    epa_epoch, surrogate = epoch_seconds(data, epa_cfg, device, epochs)
    victim_epoch = epa_epoch if victim_cfg == epa_cfg else epoch_seconds(data, victim_cfg, device, epochs)[0]
    attack = study.attacks[0]
    one = dataclasses.replace(attack, restarts=1, steps=5 if quick else attack.steps)
    idx = poison_indices(data.train.labels, study.poison_class, one.count(len(data.train)))
    target = int(torch.nonzero(data.test.labels == study.target_class)[0])
    craft_s, _ = timed(
        lambda: craft(
            one,
            surrogate,
            data.test.images[target],
            study.poison_class,
            data.train.images[idx],
            data.train.labels[idx],
            idx,
            device=device,
        ),
        device,
    )
    craft_s *= attack.restarts * attack.steps / one.steps
    targets = study.per_bucket * len(study.buckets) + 2 * study.extremes
    epa_s = study.trajectory.runs * epa_cfg.epochs * epa_epoch
    victims_s = (targets + 1) * study.victims * victim_cfg.epochs * victim_epoch
    study_s = epa_s + targets * craft_s + victims_s
    label = f"full mode, {dataset} ({recipe}): one epoch of the EPA recipe ({epa_cfg.model})"
    return (
        label,
        epa_epoch,
        {
            "victim_epoch_s": victim_epoch,
            "victim_model": victim_cfg.model,
            "crafting_s": craft_s,
            "poisons": len(idx),
            "targets": targets,
            "epa_experiment_h": epa_s / 3600,
            "study_h": study_s / 3600,
            "victims_share": victims_s / study_s,
            "train_images": len(data.train),
        },
    )


def time_cluster_study(data: pdl.DataBundle, device: torch.device, quick: bool) -> tuple[float, float, float, bool]:
    """A quick-preset GM study (2 targets x 4 victims + 4 clean victims), serial with torch's default threads,
    serial with one thread, and on 2 local Dask workers of one thread each; the clean runs are recorded once."""
    import shutil

    from poisondiff_lite.cluster import local_client
    from poisondiff_lite.study import StudyConfig, run_study

    config = StudyConfig.quick("cifar10", victims=4 if quick else 8)
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "recorded"
        pdl.record_trajectories(
            config.trajectory, data=data, device=device, show_progress=False, keep_models=True, results_dir=base
        )

        def study(name: str, threads: int | None = None, client=None):
            folder = Path(tmp) / name
            shutil.copytree(base, folder)
            before = torch.get_num_threads()
            if threads:
                torch.set_num_threads(threads)
            try:
                start = time.perf_counter()
                result = run_study(
                    config, data=data, device=device, results_dir=folder, show_progress=False, client=client
                )
                return time.perf_counter() - start, result
            finally:
                torch.set_num_threads(before)

        serial_s, serial = study("serial")
        one_s, one = study("serial-1-thread", threads=1)
        client = local_client(2)
        try:
            cluster_s, distributed = study("cluster", client=client)
        finally:
            client.close()

    def outcomes(rows):
        return {(r["key"], r["attack"], r["victim"]): (r["pred"], round(r["p_adv"], 4)) for r in rows}

    return cluster_s, serial_s, one_s, outcomes(one.rows) == outcomes(distributed.rows)


if __name__ == "__main__":
    sys.exit(main())
