"""Run a study's crafting and victims as tasks on a Dask ``distributed`` cluster.

`run_study(config, client=client)` sends every unfinished (target, attack) crafting and every victim to the
client's workers: a `LocalCluster` of N one-thread CPU workers on one machine (`local_client`), one worker per GPU
(``dask_cuda.LocalCUDACluster``), or a Slurm allocation (``dask_jobqueue.SLURMCluster``). The calling process stays
the only writer of the study's log and poison cache: results come back to it as tasks finish, so the log keeps its
guarantees (a victim logged once, resume skips it). A task lost with its worker is run again by the scheduler.

Install the optional extra: ``pip install "poisondiff-lite[cluster]"``.
"""

from __future__ import annotations

import copy
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .attacks import AttackConfig, Poisons, craft_from_class
from .errors import PoisonDiffError, check_positive
from .utils import progress
from .victims import insert_poisons, poisoned_features, scratch_victims, test_accuracy, transfer_victims

if TYPE_CHECKING:
    from .data import DataBundle
    from .study_config import StudyPlan
    from .victims import ResultsLog

RETRIES = 2  # a task that raises is tried this many more times (a worker that dies is handled by the scheduler)


def _distributed():
    try:
        import distributed
    except ImportError as exc:
        raise PoisonDiffError(
            'running on a cluster needs Dask: pip install "poisondiff-lite[cluster]" '
            '(or pip install "dask[distributed]")'
        ) from exc
    return distributed


def local_client(workers: int, *, threads_per_worker: int = 1, **cluster_kwargs: Any):
    """A `distributed.Client` on a new local cluster of `workers` processes, `threads_per_worker` threads each.

    Give each worker one thread and its own share of the cores (torch with several threads per process on an
    oversubscribed machine is many times slower). The workers start without Dask's default
    ``MALLOC_TRIM_THRESHOLD_=65536``: setting it turns off glibc's adaptive mmap threshold, so every large torch
    buffer is mapped and unmapped again, and a CPU victim trains about 1.7 times slower (benchmarks/RESULTS.md).
    Closing the client closes the cluster.
    """
    import dask

    check_positive("workers", workers)
    check_positive("threads_per_worker", threads_per_worker)
    distributed = _distributed()
    cluster_kwargs.setdefault("dashboard_address", ":0")  # any free port: never clashes with a running cluster
    with dask.config.set({NO_MALLOC_TRIM: None}):  # None unsets it for the worker processes
        return distributed.Client(
            n_workers=workers, threads_per_worker=threads_per_worker, processes=True, **cluster_kwargs
        )


NO_MALLOC_TRIM = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
# for workers you start yourself: DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_=None


def connect(address: str, *, timeout: float = 20.0):
    """A `distributed.Client` on an existing scheduler (``tcp://host:8786``), with a one-line error if unreachable."""
    distributed = _distributed()
    try:
        return distributed.Client(address, timeout=f"{timeout}s")
    except (OSError, TimeoutError) as exc:
        raise PoisonDiffError(
            f"cannot reach the Dask scheduler at {address!r} ({exc}). Fix: start it "
            f"(dask scheduler; dask worker {address}) or check the address."
        ) from exc


def _worker_threads() -> None:
    """Give torch the worker's share of the cores (its Dask thread count), once per process."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return
    threads = getattr(getattr(worker, "state", worker), "nthreads", None) or 1
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if os.environ.get("MALLOC_TRIM_THRESHOLD_"):  # the default warnings filter shows it once per process
        warnings.warn(
            "this Dask worker runs with MALLOC_TRIM_THRESHOLD_ set, which makes torch on a CPU about 1.7x "
            "slower; start workers with DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_="
            "None (local_client does)"
        )


# ---------------------------------------------------------------------------------------------------------------
#  tasks (module-level functions, so that workers import them instead of unpickling closures)
# ---------------------------------------------------------------------------------------------------------------
def craft_task(
    attack: AttackConfig,
    surrogate,
    target_image: torch.Tensor,
    poison_class: int,
    data: DataBundle,
    seed: int,
    device: str,
) -> Poisons:
    """Craft one (target, attack)'s poisons from the first training images of the poison class."""
    _worker_threads()
    return craft_from_class(attack, surrogate, target_image, poison_class, data.train, seed=seed, device=device)


def scratch_victim_task(
    data: DataBundle, poisons: Poisons | None, recipe, seed: int, target_rows: torch.Tensor, device: str
) -> list[tuple[int, torch.Tensor, float, float]]:
    """Retrain one victim from scratch on the (poisoned) training set: ``[(seed, target logits, accuracy, s)]``."""
    _worker_threads()
    start = time.perf_counter()
    out = []
    for seed_, target_logits, test_logits in scratch_victims(
        data, insert_poisons(data.train, poisons), recipe, [seed], target_rows, device=device
    ):
        out.append((seed_, target_logits, test_accuracy(test_logits, data.test.labels), time.perf_counter() - start))
    return out


def transfer_victims_task(
    data: DataBundle,
    surrogate,
    features: dict[str, torch.Tensor],
    poisons: Poisons | None,
    target_rows: torch.Tensor,
    head,
    seeds: list[int],
    device: str,
) -> list[tuple[int, torch.Tensor, float, float]]:
    """Train one linear head per seed on the surrogate's features of the (poisoned) training set."""
    _worker_threads()
    rows = poisoned_features(surrogate, features["train"], poisons, device=device)
    out, start = [], time.perf_counter()
    for seed, target_logits, test_logits in transfer_victims(
        rows, data.train.labels, features["test"], target_rows, data.num_classes, head, seeds
    ):
        out.append((seed, target_logits, test_accuracy(test_logits, data.test.labels), time.perf_counter() - start))
        start = time.perf_counter()
    return out


def _share(client, value: Any, *, broadcast: bool = True):
    """Send `value` to the workers under a key of its own: one future (a dict is not split into a future per key).

    Dask keeps one value per key for the whole cluster: a dict scattered as is would live under keys like
    ``'train'``, and a second study on the same cluster would silently read the first one's features.
    """
    [future] = client.scatter([value], broadcast=broadcast, hash=False)
    return future


# ---------------------------------------------------------------------------------------------------------------
#  the driver
# ---------------------------------------------------------------------------------------------------------------
def run_plan_on_client(
    client,
    plan: StudyPlan,
    log: ResultsLog,
    *,
    data: DataBundle,
    surrogate,
    target_images,
    features: dict[str, torch.Tensor] | None,
    poison_dir: Path,
    device: str,
    show_progress: bool,
) -> None:
    """Submit every unfinished crafting and victim of `plan`; log each victim as its task finishes.

    Data, surrogate and features go to the workers once (scattered); a crafting's poisons travel to the victims
    that need them as a task result and to this process, which saves them. Nothing is logged twice: each
    (target, attack, victim) is submitted once, and only this process writes.
    """
    distributed = _distributed()
    from .study_config import attack_id, baseline_id

    config = plan.config
    run = uuid.uuid4().hex[:8]  # in every key: a cluster keeps one value per key, shared by all its clients
    data_f = _share(client, data)
    model_f = _share(client, copy.deepcopy(surrogate).cpu())
    features_f = _share(client, features) if features is not None else None
    recipe = config.victim_recipe
    victims: dict[Any, tuple[Any, int]] = {}  # victim future -> (rows builder, victims it carries)
    craftings: dict[Any, Path] = {}  # crafting future -> where its poisons are saved
    rows_of: dict[Any, Any] = {}  # victim future -> the crafting future whose loss its rows record

    def submit_victims(setting: str, poisons, todo: list[int], rows, j: int | None, name: str) -> list:
        if setting == "scratch":
            target_rows = target_images if j is None else target_images[j : j + 1]
            futures = [
                client.submit(
                    scratch_victim_task,
                    data_f,
                    poisons,
                    recipe,
                    seed,
                    target_rows,
                    device,
                    key=f"victim-{name}-{seed}-{run}",
                    retries=RETRIES,
                )
                for seed in todo
            ]
        else:
            target_rows = features["targets"] if j is None else features["targets"][j : j + 1]
            futures = [
                client.submit(
                    transfer_victims_task,
                    data_f,
                    model_f,
                    features_f,
                    poisons,
                    target_rows,
                    config.head,
                    todo,
                    device,
                    key=f"heads-{name}-{run}",
                    retries=RETRIES,
                )
            ]
        for future in futures:
            victims[future] = (rows, len(todo) if setting == "transfer" else 1)
        return futures

    for setting, todo in plan.baselines():
        submit_victims(setting, None, todo, plan.baseline_rows(setting), None, baseline_id(setting))
    for target, j, attack, todo in plan.attacks():
        ident = attack_id(attack)
        name = f"{target['key']}-{ident}"
        path = poison_dir / f"{name}.pt"
        if path.exists():
            poisons = Poisons.load(path, data.train.images)
            poisons_f = _share(client, poisons, broadcast=False)
            rows = plan.attack_rows(target, attack, poisons.final_loss)
        else:
            poisons_f = client.submit(
                craft_task,
                attack,
                model_f,
                target_images[j],
                config.poison_class,
                data_f,
                config.crafting_seed + target["index"],
                device,
                key=f"craft-{name}-{run}",
                retries=RETRIES,
            )
            craftings[poisons_f] = path
            rows = (target, attack)  # built when the poisons (and their loss) are back
        for future in submit_victims(attack.setting, poisons_f, todo, rows, j, name):
            rows_of[future] = poisons_f

    saved: dict[Any, Poisons] = {}

    def poisons_of(future) -> Poisons:
        if future not in saved:
            poisons = future.result()
            path = craftings[future]
            path.parent.mkdir(parents=True, exist_ok=True)
            poisons.save(path)
            saved[future] = poisons
        return saved[future]

    total = sum(count for _, count in victims.values())
    bar = progress(None, enable=show_progress, total=total, desc="victims (cluster)", unit="victim")
    try:
        for future in distributed.as_completed(list(victims) + list(craftings)):
            if future in craftings:
                poisons_of(future)  # saved as soon as it is back: a later interruption keeps it
                continue
            rows, count = victims.pop(future)
            if isinstance(rows, tuple):  # an attack whose poisons were crafted in this call
                target, attack = rows
                rows = plan.attack_rows(target, attack, poisons_of(rows_of[future]).final_loss)
            for seed, target_logits, accuracy, seconds in future.result():
                for row in rows(seed, target_logits, accuracy):
                    row.setdefault("seconds", round(seconds, 3))
                    log.append(row)
            bar.update(count)
    finally:
        bar.close()
        for future in list(victims) + list(craftings):
            future.cancel()
