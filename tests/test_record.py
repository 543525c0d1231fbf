"""Trajectory storage: round trip, atomic writes, resume after interruption, refusal of a foreign file."""

import dataclasses

import numpy as np
import pytest
import torch

import poisondiff_lite.record as record
import poisondiff_lite.train as train
from poisondiff_lite import ResultsFileError, TrainConfig, Trajectory, TrajectoryConfig, load_run_model
from poisondiff_lite.train import predict_logits

TOY = TrainConfig.quick(epochs=2, batch_size=16, eval_batch_size=32)


def toy_config(runs=3, **kw):
    return TrajectoryConfig(dataset="cifar10", train=TOY, runs=runs, **kw)


def test_round_trip_keeps_every_array(tmp_path):
    config = toy_config(runs=2, store_logits=True)
    traj = Trajectory.empty(config, np.array([0, 1, 2, 1]), np.arange(4), ("a", "b", "c"))
    rng = np.random.default_rng(0)
    traj.preds[:] = rng.integers(0, 3, traj.preds.shape)
    traj.true_prob[:] = rng.random(traj.true_prob.shape)
    traj.logits[:] = rng.normal(size=traj.logits.shape)
    traj.completed = 1
    loaded = Trajectory.load(traj.save(tmp_path / "t.npz"))
    assert loaded.config == config
    assert loaded.completed == 1 and loaded.classes == ("a", "b", "c")
    for name in ("preds", "true_prob", "logits", "labels", "indices", "train_accuracy"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(traj, name))
        assert getattr(loaded, name).dtype == getattr(traj, name).dtype
    assert loaded.finished().preds.shape == (1, 2, 4)


def test_failed_write_leaves_old_file_intact(tmp_path, monkeypatch):
    path = tmp_path / "t.npz"
    traj = Trajectory.empty(toy_config(), np.array([0, 1]), np.arange(2), ("a", "b"))
    traj.save(path)
    before = path.read_bytes()

    def broken_savez(handle, **arrays):
        handle.write(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken_savez)
    traj.completed = 1
    with pytest.raises(ResultsFileError, match="disk full.*Fix: free disk space"):  # one line, naming the fix
        traj.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["t.npz"]  # no temporary file left behind


def test_corrupt_file_gets_clear_error(tmp_path):
    path = tmp_path / "t.npz"
    path.write_bytes(b"not a zip at all")
    with pytest.raises(ResultsFileError, match="delete it and record again"):
        Trajectory.load(path)
    with pytest.raises(ResultsFileError, match="no trajectory file"):
        Trajectory.load(tmp_path / "missing.npz")


def spy_on_training(monkeypatch, calls: list, crash_on_call: int | None = None) -> None:
    """Make the recorder train its runs one by one through a spy that notes each seed (and can crash on one)."""
    real = train.train_fresh_many

    def spy(data, cfg, seeds, **kwargs):
        for seed in seeds:
            calls.append(seed)
            if len(calls) == crash_on_call:
                raise KeyboardInterrupt
            yield from real(data, cfg, [seed], **kwargs)

    monkeypatch.setattr(record, "train_fresh_many", spy)


def test_interrupted_experiment_resumes_from_last_finished_run(tmp_path, toy_bundle, monkeypatch):
    config = toy_config(runs=3)
    reference = record.record_trajectories(
        config, data=toy_bundle, path=tmp_path / "ref.npz", show_progress=False, device="cpu"
    )
    assert reference.completed == 3

    calls = []
    spy_on_training(monkeypatch, calls, crash_on_call=2)  # the user stops the notebook during run 2
    path = tmp_path / "run.npz"
    with pytest.raises(KeyboardInterrupt):
        record.record_trajectories(config, data=toy_bundle, path=path, show_progress=False, device="cpu")
    assert Trajectory.load(path).completed == 1

    calls.clear()
    spy_on_training(monkeypatch, calls)
    resumed = record.record_trajectories(config, data=toy_bundle, path=path, show_progress=False, device="cpu")
    assert calls == [1, 2]  # run 0 was not trained again
    np.testing.assert_array_equal(resumed.preds, reference.preds)
    np.testing.assert_array_equal(resumed.true_prob, reference.true_prob)

    calls.clear()
    again = record.record_trajectories(config, data=toy_bundle, path=path, show_progress=False, device="cpu")
    assert calls == [] and again.completed == 3


def test_extending_runs_trains_only_the_new_ones(tmp_path, toy_bundle, monkeypatch):
    path = tmp_path / "t.npz"
    first = record.record_trajectories(
        toy_config(runs=1), data=toy_bundle, path=path, show_progress=False, device="cpu"
    )
    calls = []
    spy_on_training(monkeypatch, calls)
    more = record.record_trajectories(toy_config(runs=2), data=toy_bundle, path=path, show_progress=False, device="cpu")
    assert calls == [1] and more.completed == 2
    np.testing.assert_array_equal(more.preds[0], first.preds[0])
    fewer = record.record_trajectories(
        toy_config(runs=1), data=toy_bundle, path=path, show_progress=False, device="cpu"
    )
    assert fewer.completed == 1 and calls == [1]


def test_other_experiment_at_same_path_is_refused(tmp_path, toy_bundle):
    path = tmp_path / "t.npz"
    record.record_trajectories(toy_config(runs=1), data=toy_bundle, path=path, show_progress=False, device="cpu")
    other = toy_config(runs=1, seed0=5)
    with pytest.raises(ResultsFileError, match="different experiment"):
        record.record_trajectories(other, data=toy_bundle, path=path, show_progress=False, device="cpu")


def test_recorded_values_match_the_saved_final_model(tmp_path, toy_bundle):
    path = tmp_path / "t.npz"
    traj = record.record_trajectories(
        toy_config(runs=1, store_logits=True),
        data=toy_bundle,
        path=path,
        show_progress=False,
        device="cpu",
        keep_models=True,
    )
    model = load_run_model(path, run=0)
    logits = predict_logits(model, toy_bundle.test.images, device="cpu")
    np.testing.assert_array_equal(traj.preds[0, -1], logits.argmax(1).numpy())
    prob = torch.softmax(logits, 1)[torch.arange(len(logits)), toy_bundle.test.labels]
    np.testing.assert_allclose(traj.true_prob[0, -1], prob.numpy(), atol=2e-3)
    np.testing.assert_allclose(traj.logits[0, -1], logits.numpy(), atol=2e-2, rtol=1e-2)
    np.testing.assert_allclose(traj.eval_accuracy()[0], (traj.preds[0] == traj.labels).mean(1))


def test_every_recorded_epoch_is_that_epoch_of_training(tmp_path, toy_bundle):
    # with a constant lr, the first k epochs of a run are a k-epoch training from the same seed: train those
    # separately (no recorder involved) and compare with what the recorder wrote for epoch k of run 1
    cfg = TrainConfig.quick(epochs=3, batch_size=16, eval_batch_size=32, schedule="constant", warmup_epochs=0)
    config = TrajectoryConfig(dataset="cifar10", train=cfg, runs=2)
    traj = record.record_trajectories(
        config, data=toy_bundle, path=tmp_path / "t.npz", show_progress=False, device="cpu"
    )
    for epochs in (1, 2, 3):
        model, _ = train.train_fresh(
            toy_bundle, dataclasses.replace(cfg, epochs=epochs), seed=1, device="cpu", show_progress=False
        )
        preds = predict_logits(model, toy_bundle.test.images, device="cpu").argmax(1).numpy()
        np.testing.assert_array_equal(traj.preds[1, epochs - 1], preds, err_msg=f"epoch {epochs}")
    assert not np.array_equal(traj.preds[1, 0], traj.preds[1, 2])  # the epochs differ, so the check can fail


def test_records_only_the_chosen_examples(tmp_path, toy_bundle):
    chosen = (5, 0, 17)
    traj = record.record_trajectories(
        toy_config(runs=1, eval_indices=chosen),
        data=toy_bundle,
        path=tmp_path / "t.npz",
        show_progress=False,
        device="cpu",
    )
    assert traj.preds.shape == (1, 2, 3)
    np.testing.assert_array_equal(traj.indices, chosen)
    np.testing.assert_array_equal(traj.labels, toy_bundle.test.labels[list(chosen)].numpy())
    from poisondiff_lite import InvalidChoiceError

    with pytest.raises(InvalidChoiceError, match="eval_indices"):
        record.record_trajectories(
            toy_config(runs=1, eval_indices=(99,)),
            data=toy_bundle,
            path=tmp_path / "u.npz",
            show_progress=False,
            device="cpu",
        )
