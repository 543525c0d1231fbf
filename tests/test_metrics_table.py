"""The metrics CSV: every requested pair once, δ/τ as the direct functions give them, resumable after interruption."""

import math

import numpy as np
import pytest

import poisondiff_lite.metrics_table as table
import poisondiff_lite.targets as targets
from poisondiff_lite import ResultsFileError, TrainConfig, TrajectoryConfig, load_run_model
from poisondiff_lite.budget import budget_lower_bound
from poisondiff_lite.cli import main
from poisondiff_lite.distance import poisoning_distance
from poisondiff_lite.record import default_path

KW = dict(indices=[1, 2], poison_classes=[0, 3], tau_batches=2, tau_batch_size=16, device="cpu", show_progress=False)


def toy_config():
    return TrajectoryConfig(dataset="cifar10", train=TrainConfig.quick(epochs=2, batch_size=16), runs=1)


def test_rows_match_direct_computation(tmp_path, toy_bundle):
    out = tmp_path / "m.csv"
    rows = table.target_metrics_csv(toy_config(), out, data=toy_bundle, results_dir=tmp_path, **KW)
    assert all(isinstance(v, str) for r in rows for v in r.values())  # as read back from the file, fresh or not
    pairs = {(int(r["index"]), int(r["poison_class"])) for r in rows}
    labels = toy_bundle.test.labels
    assert pairs == {(i, c) for i in (1, 2) for c in (0, 3) if c != int(labels[i])}
    model = load_run_model(default_path(toy_config(), tmp_path))
    for r in rows:
        image = toy_bundle.test.images[int(r["index"])]
        direct = poisoning_distance(model, image, int(r["poison_class"]), device="cpu")
        assert float(r["delta_step"]) == pytest.approx(direct.step, abs=2e-4, rel=1e-5)
        tau = budget_lower_bound(
            model,
            image,
            int(r["poison_class"]),
            toy_bundle.train,
            delta=direct,
            num_batches=2,
            batch_size=16,
            device="cpu",
        ).tau
        if math.isinf(tau):  # the prediction never flips: the table must say so, not a number
            assert r["tau"] == "inf" and r["delta_step"] == "inf"
        else:
            assert float(r["tau"]) == pytest.approx(tau, rel=1e-3, abs=1e-6)
        assert 0 <= float(r["epa"]) <= 1 and r["bucket"] == "chosen"


def same_rows(a, b):
    """Equal row sets. Computed floats may differ in the last digits (threaded CPU reductions are not bit-reproducible),
    and such a difference may move δ's flip across one bisection midpoint (α = 1e-4)."""
    key = lambda r: (int(r["index"]), int(r["poison_class"]))  # noqa: E731
    a, b = sorted(a, key=key), sorted(b, key=key)
    if [key(r) for r in a] != [key(r) for r in b]:
        return False
    computed = ("delta_step", "grad_norm", "delta_param", "tau", "tau_inner")
    for ra, rb in zip(a, b):
        if {k: str(v) for k, v in ra.items() if k not in computed} != {
            k: str(v) for k, v in rb.items() if k not in computed
        }:
            return False
        norm = float(ra["grad_norm"])
        close = (
            math.isclose(float(ra["delta_step"]), float(rb["delta_step"]), rel_tol=1e-5, abs_tol=2e-4)
            and math.isclose(float(ra["delta_param"]), float(rb["delta_param"]), rel_tol=1e-5, abs_tol=2e-4 * norm)
            and all(math.isclose(float(ra[k]), float(rb[k]), rel_tol=1e-3) for k in computed[1:2] + computed[3:])
        )
        if not close:
            return False
    return True


def test_interrupted_table_resumes_without_recomputing(tmp_path, toy_bundle, monkeypatch):
    out = tmp_path / "m.csv"
    full = table.target_metrics_csv(toy_config(), out, data=toy_bundle, results_dir=tmp_path, **KW)
    kept = [r for r in full if r["index"] == "1"]
    assert 0 < len(kept) < len(full)
    table._write_rows(out, kept)  # as if the run died after the first target
    calls = []
    real = targets.budget_lower_bound  # the one target-rows builder computes every τ
    monkeypatch.setattr(targets, "budget_lower_bound", lambda *a, **k: (calls.append(a[2]), real(*a, **k))[1])
    resumed = table.target_metrics_csv(toy_config(), out, data=toy_bundle, results_dir=tmp_path, **KW)
    assert len(calls) == len(full) - len(kept)
    assert same_rows(resumed, full)
    calls.clear()
    table.target_metrics_csv(toy_config(), out, data=toy_bundle, results_dir=tmp_path, **KW)
    assert calls == []


@pytest.mark.parametrize(
    "change", [dict(variant="authors"), dict(tau_batches=3), dict(last_layer_only=True), dict(runs=2)]
)
def test_a_changed_setting_never_reuses_old_rows(tmp_path, toy_bundle, change):
    out = tmp_path / "m.csv"
    table.target_metrics_csv(toy_config(), out, data=toy_bundle, results_dir=tmp_path, **KW)
    before = out.read_bytes()
    config = toy_config()
    kw = dict(KW)
    if "runs" in change:
        config = TrajectoryConfig(dataset="cifar10", train=config.train, runs=change["runs"])
    else:
        kw.update(change)
    with pytest.raises(ResultsFileError, match="other settings"):
        table.target_metrics_csv(config, out, data=toy_bundle, results_dir=tmp_path, **kw)
    assert out.read_bytes() == before


def test_a_csv_without_settings_is_refused(tmp_path):
    out = tmp_path / "m.csv"
    out.write_text(",".join(table.COLUMNS[:-1]) + "\n")
    with pytest.raises(ResultsFileError, match="did not record its settings"):
        table.read_rows(out)


def test_foreign_csv_is_refused(tmp_path):
    out = tmp_path / "m.csv"
    out.write_text("a,b\n1,2\n")
    with pytest.raises(ResultsFileError, match="not a poisondiff metrics CSV"):
        table.read_rows(out)


def test_cli_names_valid_poison_classes(capsys, tmp_path):
    code = main(
        [
            "metrics",
            "--runs",
            "1",
            "--epochs",
            "1",
            "--indices",
            "3",
            "--poison-class",
            "aeroplane",
            "--out",
            str(tmp_path / "m.csv"),
            "--no-progress",
        ]
    )
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: unknown class name 'aeroplane'; valid choices: 'airplane', 'automobile'")
    assert len(err.splitlines()) == 1
    assert not np.any([p.suffix == ".csv" for p in tmp_path.iterdir()])
