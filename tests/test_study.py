"""Study driver: hand-computed summaries, a study that resumes, targets that follow the buckets and the metrics."""

import json

import numpy as np
import pytest
import torch

import poisondiff_lite.study as study
from poisondiff_lite import InvalidChoiceError, TrainConfig, TrajectoryConfig
from poisondiff_lite.attacks import AttackConfig
from poisondiff_lite.budget import budget_lower_bound
from poisondiff_lite.distance import poisoning_distance
from poisondiff_lite.record import default_path, load_run_model
from poisondiff_lite.victims import HeadConfig, asr_interval


# -----------------------------------------------------------------------------------------------------------------
#  a study's summaries against hand computation (the statistics themselves: test_stats.py)
# -----------------------------------------------------------------------------------------------------------------
def test_bucket_table_is_mean_and_population_std():
    config = study.StudyConfig(trajectory=TrajectoryConfig.quick(), attacks=(AttackConfig.quick("gm"),), victims=4)
    ident = study.attack_id(config.attacks[0])
    targets = [
        {
            "key": f"0-1-{i}",
            "index": i,
            "bucket": b,
            "epa": e,
            "dps": e,
            "delta_step": d,
            "delta_param": d,
            "tau": d,
            "soft_epa": e,
        }
        for i, b, e, d in [(1, "lowest", 0.0, 0.1), (2, "lowest", 0.1, 0.2), (3, "highest", 1.0, 0.9)]
    ]
    wins = {1: [1, 1, 1, 1], 2: [1, 1, 0, 0], 3: [0, 0, 0, 1]}
    rows = [
        {"key": f"0-1-{i}", "attack": ident, "victim": v, "success": bool(s), "clean_accuracy": 0.9}
        for i, ws in wins.items()
        for v, s in enumerate(ws)
    ]
    results = study.StudyResults(config, targets, rows)
    table = {r["bucket"]: r for r in results.by_bucket()}
    assert table["lowest"]["mean_asr"] == 0.75 and table["lowest"]["std_asr"] == pytest.approx(0.25)
    assert table["lowest"]["pooled_low"] == pytest.approx(asr_interval(6, 8)[0])
    assert table["highest"]["mean_asr"] == 0.25 and table["highest"]["targets"] == 1
    corr = {r["metric"]: r for r in results.correlations()}
    assert corr["epa"]["auroc"] == 1.0  # the two successful targets (ASR >= 0.5) have the lowest EPA
    assert corr["epa"]["pearson"] == pytest.approx(np.corrcoef([0.0, 0.1, 1.0], [1.0, 0.5, 0.25])[0, 1])
    assert results.complete()


# -----------------------------------------------------------------------------------------------------------------
#  a whole (tiny) study, interrupted and resumed
# -----------------------------------------------------------------------------------------------------------------
def tiny_config(victims=2):
    trajectory = TrajectoryConfig(dataset="cifar10", train=TrainConfig.quick(epochs=2, batch_size=16), runs=2)
    attacks = (
        AttackConfig(name="gm", num_poisons=4, steps=2, restarts=1),
        AttackConfig(name="fc", num_poisons=4, steps=2, restarts=1, setting="transfer"),
    )
    return study.StudyConfig(
        trajectory=trajectory,
        attacks=attacks,
        per_bucket=1,
        buckets=("lowest", "highest"),
        victims=victims,
        tau_batches=2,
        tau_batch_size=16,
        head=HeadConfig(epochs=2),
    )


class Interrupt(Exception):
    pass


def test_interrupted_study_resumes_without_recomputing(tmp_path, toy_bundle, monkeypatch):
    config = tiny_config()
    trained, crafted = [], []
    real_scratch, real_craft = study.scratch_victims, study.craft_from_class

    def counting_scratch(*args, **kwargs):
        for item in real_scratch(*args, **kwargs):
            trained.append(item[0])
            if limit is not None and len(trained) >= limit:
                raise Interrupt  # the machine dies right after this victim finished training
            yield item

    monkeypatch.setattr(study, "scratch_victims", counting_scratch)
    monkeypatch.setattr(study, "craft_from_class", lambda *a, **k: (crafted.append(1), real_craft(*a, **k))[1])
    limit = 4  # 2 clean victims, then die during the first attacked target's second victim
    with pytest.raises(Interrupt):
        study.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    partial = study.load_study(config, tmp_path)
    assert len({(r["key"], r["attack"], r["victim"]) for r in partial.rows}) == len(partial.rows)
    finished_victims = len(trained) - 1  # the last one was trained but never logged
    crafted_before = len(crafted)

    trained.clear()
    limit = None
    results = study.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    targets = len(results.targets)
    expected_scratch = config.victims + targets * config.victims  # clean victims + GM victims
    assert len(trained) == expected_scratch - finished_victims, "finished victims were trained again"
    assert len(crafted) - crafted_before == 2 * targets - crafted_before, "saved poisons were crafted again"
    assert results.complete()
    keys = [(r["key"], r["attack"], r["victim"]) for r in results.rows]
    assert len(keys) == len(set(keys)) == 2 * targets * config.victims + 2 * targets * config.victims
    names = {r["attack"].split("-")[0] for r in results.rows}
    assert names == {"gm", "fc", "none"}

    trained.clear()
    again = study.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    assert trained == [] and len(again.rows) == len(results.rows)

    more = study.run_study(
        tiny_config(victims=3), data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False
    )  # more victims extend the same study
    assert len(trained) == 1 + targets and more.complete()


def test_study_targets_follow_buckets_and_metrics(tmp_path, toy_bundle):
    config = tiny_config()
    results = study.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    assert [t["bucket"] for t in results.targets] == ["lowest", "highest"]
    assert results.targets[0]["epa"] <= results.targets[1]["epa"]
    for t in results.targets:
        assert t["key"] == f"0-1-{t['index']}" and int(toy_bundle.test.labels[t["index"]]) == 0
    # δ and τ are those of the surrogate (run 0's final model), recomputed here directly
    surrogate = load_run_model(default_path(config.trajectory, tmp_path), run=0)
    for t in results.targets:
        image = toy_bundle.test.images[t["index"]]
        direct = poisoning_distance(surrogate, image, config.poison_class, device="cpu")
        assert t["delta_step"] == pytest.approx(direct.step, abs=2e-4, rel=1e-5)
        assert t["delta_param"] == pytest.approx(direct.distance, rel=1e-3, abs=2e-4 * direct.grad_norm)
        tau = budget_lower_bound(
            surrogate,
            image,
            config.poison_class,
            toy_bundle.train,
            delta=direct,
            num_batches=config.tau_batches,
            batch_size=config.tau_batch_size,
            device="cpu",
        ).tau
        assert t["tau"] == pytest.approx(tau, rel=1e-3, abs=1e-6)
    saved = json.loads((results.path / "study.json").read_text())
    assert study.StudyConfig.from_dict(saved) == config
    assert {p.name.split("-")[0] for p in (results.path / "poisons").iterdir()} == {"0"}
    table = study.format_table(results.per_target(), ["label", "bucket", "asr"])
    assert "GM" in table and "FC (transfer)" in table and "no attack (scratch)" in table


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"poison_class": 0}, "poison class must differ"),
        ({"buckets": ("lowest", "p50")}, "unknown EPA bucket 'p50'"),
        ({"victims": 0}, "victims must be > 0"),
        ({"attacks": ()}, "at least one attack"),
    ],
)
def test_bad_study_settings_name_the_fix(kwargs, message):
    with pytest.raises(InvalidChoiceError, match=message):
        study.StudyConfig(**kwargs)


def test_unknown_class_index_is_refused(tmp_path, toy_bundle):
    with pytest.raises(InvalidChoiceError, match="unknown poison class 7"):
        study.run_study(
            tiny_config().__class__(**{**tiny_config().__dict__, "poison_class": 7}),
            data=toy_bundle,
            device="cpu",
            results_dir=tmp_path,
            show_progress=False,
        )


def test_toy_bundle_is_unchanged_by_a_study(tmp_path, toy_bundle):
    before = toy_bundle.train.images.clone()
    study.run_study(tiny_config(), data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    assert torch.equal(before, toy_bundle.train.images)


@pytest.mark.parametrize("metric", ["delta", "tau"])
def test_extreme_targets_are_the_smallest_and_largest(tmp_path, toy_bundle, metric):
    from poisondiff_lite import default_path, load_run_model
    from poisondiff_lite.budget import budget_matrix
    from poisondiff_lite.distance import distance_matrix

    config = study.StudyConfig(
        **{
            **tiny_config().__dict__,
            "extremes": 1,
            "extreme_metric": metric,
            "attacks": (AttackConfig(name="fc", num_poisons=4, steps=1, restarts=1, setting="transfer"),),
        }
    )
    results = study.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    model = load_run_model(default_path(config.trajectory, tmp_path))
    members = torch.nonzero(toy_bundle.test.labels == 0).squeeze(1)
    images = toy_bundle.test.images[members]
    values = distance_matrix(
        model, images, toy_bundle.test.labels[members], poison_classes=[1], device="cpu", show_progress=False
    ).step[:, 1]
    if metric == "tau":
        values = budget_matrix(
            model,
            images,
            np.ones(len(members), dtype=int),
            toy_bundle.train,
            values,
            num_batches=config.tau_batches,
            batch_size=config.tau_batch_size,
            device="cpu",
        )
    values = np.where(np.isnan(values), np.inf, values)
    chosen = {t["index"] for t in results.targets}
    lowest = {int(m) for m, v in zip(members, values) if v == values.min()}  # ties: any of them will do
    highest = {int(m) for m, v in zip(members, values) if v == values.max()}
    assert chosen & lowest and chosen & highest
    with pytest.raises(InvalidChoiceError, match="unknown extreme metric 'eta'"):
        study.StudyConfig(extreme_metric="eta")


def test_saved_studies_are_found_even_when_the_config_format_changes(tmp_path, toy_bundle):
    config = tiny_config()
    results = study.run_study(config, data=toy_bundle, device="cpu", results_dir=tmp_path, show_progress=False)
    saved = json.loads((results.path / "study.json").read_text())
    saved.pop("extreme_metric")  # as written by an older version, whose hash differs
    (results.path / "study.json").write_text(json.dumps(saved))
    renamed = results.path.with_name("cifar10-olderversion1")
    results.path.rename(renamed)
    found = study.find_studies(tmp_path)
    assert len(found) == 1 and found[0].path == renamed and len(found[0].rows) == len(results.rows)
    (renamed / "results.jsonl").write_text("not a log\n")
    assert study.find_studies(tmp_path) == []  # named as skipped on stdout, never an exception


def test_finding_text_says_what_the_numbers_say():
    from poisondiff_lite.artifacts import finding_text

    config = study.StudyConfig(trajectory=TrajectoryConfig.quick(), attacks=(AttackConfig.quick("gm"),), victims=4)
    ident = study.attack_id(config.attacks[0])
    epa = {i: i / 10 for i in range(10)}
    targets = [
        {
            "key": f"0-1-{i}",
            "index": i,
            "bucket": "lowest" if i < 5 else "highest",
            "epa": e,
            "dps": e,
            "delta_step": e,
            "delta_param": e,
            "tau": e,
            "soft_epa": e,
        }
        for i, e in epa.items()
    ]

    def results(wins_of):
        rows = [
            {"key": f"0-1-{i}", "attack": ident, "victim": v, "success": v < wins_of(i), "clean_accuracy": 0.9}
            for i in epa
            for v in range(4)
        ]
        return study.StudyResults(config, targets, rows)

    easy_first = finding_text(results(lambda i: 4 if i < 5 else 0))  # the five lowest-EPA targets always fall
    assert "mean ASR 1.00" in easy_first and "0.00 [0.00, 0.16] in the highest" in easy_first
    assert "as the paper claims" in easy_first and "AUROC = 1.00" in easy_first
    reversed_ = finding_text(results(lambda i: 0 if i < 5 else 4))
    assert "the opposite of the paper's claim" in reversed_
    assert "(every target has ASR 0.00)" in finding_text(results(lambda i: 0))  # nothing succeeded: no correlation
    one_bucket = study.StudyResults(config, targets[:2], results(lambda i: 4).rows[:8])  # two lowest targets
    text = finding_text(one_bucket)
    assert "in the only group attacked, the lowest-EPA bucket" in text and "against" not in text
    assert "(2 target(s): a rank correlation needs at least 3)" in text
    delta_groups = [dict(t, bucket="δ-low" if t["index"] < 5 else "δ-high") for t in targets]  # no EPA buckets
    text = finding_text(study.StudyResults(config, delta_groups, results(lambda i: 4 if i < 5 else 0).rows))
    assert "No attack rows" not in text and "group" in text and "1.00" in text and "0.00" in text, text


def test_finding_text_names_pearson_where_it_disagrees_with_spearman():
    import poisondiff_lite as pdl
    from poisondiff_lite.artifacts import finding_text

    lab = pdl.shipped_study("cifar10-lab-scratch")
    [c] = [c for c in lab.correlations() if c["metric"] == "epa"]
    assert c["spearman_p"] < 0.05 <= c["pearson_p"]  # the shipped file's numbers: one significant, one not
    assert f"Pearson, the statistic the paper reports, is not significant (r = {c['pearson']:+.2f}" in finding_text(lab)
