"""The study on a real Dask LocalCluster (2 worker processes): same results as the serial run, nothing lost or
duplicated when a worker or the driver dies."""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time

import pytest
import torch

pytest.importorskip("distributed")

from poisondiff_lite import cluster, study  # noqa: E402
from poisondiff_lite.config import TrainConfig  # noqa: E402
from poisondiff_lite.errors import PoisonDiffError  # noqa: E402
from poisondiff_lite.victims import ResultsLog  # noqa: E402
from test_study import tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def client():
    c = cluster.local_client(2)
    yield c
    c.close()


def _outcomes(rows):
    return {
        (r["key"], r["attack"], r["victim"]): (
            r["pred"],
            r["p_adv"],
            r["p_true"],
            r["clean_accuracy"],
            r.get("crafting_loss") or 0.0,
        )
        for r in rows
    }


def _same(a, b):
    """Same victims, same predictions; probabilities and losses equal up to float rounding (a worker's torch and
    this process may reduce in another order when their thread counts differ)."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0] == b[key][0], key
        assert a[key][1:] == pytest.approx(b[key][1:], abs=1e-3), key


def _keys(rows):
    return [(r["key"], r["attack"], r["victim"]) for r in rows]


def test_cluster_study_equals_the_serial_study(tmp_path, toy_bundle, client):
    config = tiny_config()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers have one thread each: the same arithmetic
    try:
        serial = study.run_study(
            config, data=toy_bundle, device="cpu", results_dir=tmp_path / "serial", show_progress=False
        )
    finally:
        torch.set_num_threads(threads)
    # another study on the same cluster holds its own data under the names a study's features have
    foreign = client.scatter({name: torch.zeros(1) for name in ("train", "test", "targets")}, broadcast=True)
    distributed = study.run_study(
        config, data=toy_bundle, device="cpu", results_dir=tmp_path / "cluster", show_progress=False, client=client
    )
    del foreign
    assert len(_keys(distributed.rows)) == len(set(_keys(distributed.rows))) == len(serial.rows) == 16
    _same(_outcomes(distributed.rows), _outcomes(serial.rows))
    saved = sorted(p.name for p in (distributed.path / "poisons").glob("*.pt"))
    assert saved == sorted(p.name for p in (serial.path / "poisons").glob("*.pt")) and len(saved) == 4
    for name in saved:  # the driver saved the poisons the serial run crafted (a pixel may round the other way)
        a = torch.load(distributed.path / "poisons" / name)["images"].int()
        b = torch.load(serial.path / "poisons" / name)["images"].int()
        assert (a - b).abs().max() <= 1 and (a != b).float().mean() < 0.01


def test_two_studies_on_one_cluster_share_no_key(tmp_path, toy_bundle, client, monkeypatch):
    """Dask answers a task or a scatter whose key it already holds with the value it holds: a second study (other
    data, model or epochs) must never reuse a key of the first, even for the same target and attack."""
    keys = []
    real_submit, real_scatter = client.submit, client.scatter

    def submit(*args, **kwargs):
        future = real_submit(*args, **kwargs)
        keys[-1].append(future.key)
        return future

    def scatter(*args, **kwargs):
        futures = real_scatter(*args, **kwargs)
        keys[-1].extend(f.key for f in (futures.values() if isinstance(futures, dict) else futures))
        return futures

    monkeypatch.setattr(client, "submit", submit)
    monkeypatch.setattr(client, "scatter", scatter)
    config = tiny_config(victims=1)
    for name in ("first", "second"):
        keys.append([])
        study.run_study(
            config, data=toy_bundle, device="cpu", results_dir=tmp_path / name, show_progress=False, client=client
        )
    first, second = keys
    assert len(first) == len(second) > 3 and not set(first) & set(second)


def test_worker_threads_follow_the_dask_thread_count(client):
    assert set(client.run(lambda: (cluster._worker_threads(), torch.get_num_threads())[1]).values()) == {1}


def test_local_workers_keep_glibcs_adaptive_malloc(client):
    # Dask's default MALLOC_TRIM_THRESHOLD_=65536 made a CPU victim 1.7x slower inside a worker
    import os

    assert set(client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_")).values()) == {None}


def test_a_killed_worker_loses_nothing_and_duplicates_nothing(tmp_path, toy_bundle, client):
    config = dataclasses.replace(
        tiny_config(victims=6),
        trajectory=dataclasses.replace(tiny_config().trajectory, train=TrainConfig.quick(epochs=6, batch_size=16)),
    )
    expected = 2 * 2 * 6 + 2 * 2 * 6  # (GM + FC) x 2 targets x 6 victims, + 6 clean victims per setting x 2 targets
    log_path = study.study_dir(config, tmp_path) / "results.jsonl"
    killed = {}

    def kill_a_worker_after_the_first_victim():
        deadline = time.time() + 120
        while time.time() < deadline:
            if log_path.exists() and len(ResultsLog.read(log_path).rows) >= 1:
                pids = client.run(os.getpid)
                address, pid = sorted(pids.items())[0]
                killed["rows_before"] = len(ResultsLog.read(log_path).rows)
                os.kill(pid, signal.SIGKILL)
                killed["pid"] = pid
                return
            time.sleep(0.01)

    watcher = threading.Thread(target=kill_a_worker_after_the_first_victim)
    watcher.start()
    result = study.run_study(
        config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False, client=client
    )
    watcher.join()
    assert "pid" in killed and killed["rows_before"] < expected, "the worker must die while work is left"
    keys = _keys(result.rows)
    assert len(keys) == len(set(keys)) == expected and result.complete()
    client.wait_for_workers(2, timeout=60)  # the nanny restarted the killed worker
    assert killed["pid"] not in client.run(os.getpid).values()


class DriverDied(Exception):
    pass


def test_an_interrupted_cluster_study_resumes_without_loss_or_duplicates(tmp_path, toy_bundle, client, monkeypatch):
    config = tiny_config(victims=3)
    real_append = ResultsLog.append
    appended = []

    def dying_append(self, row):
        if len(appended) == 5:
            raise DriverDied  # the driver dies after logging five victims
        appended.append(row)
        real_append(self, row)

    monkeypatch.setattr(ResultsLog, "append", dying_append)
    with pytest.raises(DriverDied):
        study.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False, client=client)
    monkeypatch.setattr(ResultsLog, "append", real_append)
    partial = study.load_study(config, tmp_path)
    assert len(partial.rows) == 5
    result = study.run_study(
        config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False, client=client
    )
    keys = _keys(result.rows)
    assert len(keys) == len(set(keys)) == 2 * 2 * 3 * 2 and result.complete()
    kept = _outcomes(result.rows)
    assert all(kept[key] == value for key, value in _outcomes(partial.rows).items())  # the first five as they were


def test_missing_dask_names_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_distributed(name, *args, **kwargs):
        if name == "distributed":
            raise ImportError("No module named 'distributed'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_distributed)
    with pytest.raises(PoisonDiffError, match=r"poisondiff-lite\[cluster\]"):
        cluster.local_client(2)


def test_unreachable_scheduler_is_a_one_line_error():
    with pytest.raises(PoisonDiffError, match="cannot reach the Dask scheduler"):
        cluster.connect("tcp://127.0.0.1:9", timeout=2)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--workers", "0"], "workers must be > 0"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "choose one of --workers and --scheduler"),
    ],
)
def test_cli_cluster_options_are_checked(argv, message, capsys):
    from poisondiff_lite import cli

    args = cli.build_parser().parse_args(["study", *argv])
    with pytest.raises(PoisonDiffError, match=message):
        cli._client(args)
