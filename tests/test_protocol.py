"""Protocol fidelity: the authors' recipes field by field, crafting augmentation that follows the victims, Witches'
Brew's bilinear shifts, the benchmark's feature collision, the authors' target groups and a stated tie rule, and the
τ variant of a study; new settings leave every saved result's id unchanged."""

import dataclasses
import math

import numpy as np
import pytest
import scipy.ndimage
import torch
from conftest import make_toy_bundle
from test_study import tiny_config

import poisondiff_lite as pdl
import poisondiff_lite.study as study
from poisondiff_lite import (
    AttackConfig,
    InvalidChoiceError,
    StudyConfig,
    TrainConfig,
    TrajectoryConfig,
    build_model,
    train_fresh,
)
from poisondiff_lite.attacks import benchmark_descent, collision_objective, craft
from poisondiff_lite.augment import resize_boxes, resized_crop_boxes, shift_bilinear
from poisondiff_lite.budget import budget_lower_bound, lambert_denominator
from poisondiff_lite.data import to_unit
from poisondiff_lite.metrics import epa_buckets
from poisondiff_lite.record import default_path, load_run_model
from poisondiff_lite.results import target_groups
from poisondiff_lite.targets import extreme_order


# -----------------------------------------------------------------------------------------------------------------
#  the authors' recipes, against the values in their scripts
# -----------------------------------------------------------------------------------------------------------------
def _fields(cfg, **expected):
    return {k: getattr(cfg, k) for k in expected}, expected


def test_authors_cifar10_epa_recipe_field_by_field():
    traj = TrajectoryConfig.full("cifar10", recipe="authors")  # epa_rank_cifar10_resnet18.py
    assert traj.runs == 8 and traj.dataset == "cifar10"
    got, want = _fields(
        traj.train,
        model="resnet18",
        epochs=40,
        batch_size=128,
        lr=0.1,
        momentum=0.9,
        nesterov=False,
        weight_decay=5e-4,
        schedule="constant",
        crop_padding=0,
        flip=False,
        resized_crop=0.0,
        normalize="none",
        label_smoothing=0.0,
    )
    assert got == want
    model = build_model(traj.train.model, 10)
    assert model.body.conv1.kernel_size == (7, 7)  # torchvision's ImageNet stem, as resnet18(num_classes=10)


def test_authors_correlation_table_recipe_field_by_field():
    traj = TrajectoryConfig.correlation_table()  # metrics_cifar10_epa_dps_y0.py: 8 x 100, plain SGD
    assert traj.runs == 8
    got, want = _fields(
        traj.train,
        model="resnet18",
        epochs=100,
        batch_size=128,
        lr=0.1,
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        crop_padding=0,
        flip=False,
        normalize="none",
    )
    assert got == want


def test_authors_tinyimagenet_recipe_field_by_field():
    traj = TrajectoryConfig.full("tinyimagenet", recipe="authors")  # epa_rank_tinyimagenet_yt0.py
    assert traj.runs == 8
    got, want = _fields(
        traj.train,
        model="vgg16_torchvision",
        epochs=40,
        batch_size=128,
        lr=0.01,
        momentum=0.0,
        weight_decay=0.0,
        schedule="constant",
        crop_padding=0,
        resized_crop=0.8,
        flip=True,
        normalize="imagenet",
    )
    assert got == want
    assert traj.train.input_normalisation((0.5,) * 3, (0.2,) * 3) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    model = build_model("vgg16_torchvision", 200)
    assert model.head.in_features == 4096 and model.head.out_features == 200
    assert sum(isinstance(m, torch.nn.Linear) and m.out_features == 4096 for m in model.body.modules()) == 2


def test_authors_study_protocol_field_by_field():
    for dataset, victim_model, victim_lr, budget in (
        ("cifar10", "resnet18", 0.1, 0.01),
        ("tinyimagenet", "vgg16_torchvision", 0.01, 0.0005),
    ):
        config = StudyConfig.full(dataset, recipe="authors")
        assert config.trajectory == TrajectoryConfig.full(dataset, recipe="authors")
        got, want = _fields(
            config.victim,
            model=victim_model,
            lr=victim_lr,
            epochs=40,
            batch_size=128,
            momentum=0.9,
            nesterov=True,
            weight_decay=5e-4,
            schedule="step",
            milestones=(14, 25, 35),
            crop_padding=4,
            flip=True,
        )  # Witches' Brew "conservative" retraining
        assert got == want
        attack = config.attacks[0]
        got, want = _fields(
            attack,
            name="gm",
            eps=16 / 255,
            budget=budget,
            steps=250,
            restarts=8,
            batch_size=512,
            augment=True,
            setting="scratch",
        )
        assert got == want and config.victims == 8
    assert StudyConfig.full("cifar10", recipe="authors").buckets == ("lowest", "p20", "p40", "p60", "p80", "highest")
    tiny = StudyConfig.full("tinyimagenet", recipe="authors")
    assert (tiny.per_bucket, tiny.buckets) == (4, ("lowest", "middle", "highest"))
    with pytest.raises(InvalidChoiceError, match="unknown recipe 'paper'"):
        TrajectoryConfig.full("cifar10", recipe="paper")


def test_our_default_recipe_is_unchanged_and_keys_of_saved_results_too():
    assert TrajectoryConfig.full("cifar10", "victims") == TrajectoryConfig.full("cifar10")
    assert StudyConfig.full().victim is None
    # fields added later are left out of the hash while they hold their default
    assert "normalize" not in TrainConfig().to_dict() and "shift" not in AttackConfig().to_dict()
    assert "tau_variant" not in StudyConfig.quick().to_dict()
    assert AttackConfig(shift="bilinear").key() != AttackConfig().key()
    assert TrainConfig(normalize="none").to_dict()["normalize"] == "none"
    config = StudyConfig.quick(tau_variant="authors", attacks=(AttackConfig.benchmark_fc(beta=0.1),))
    assert StudyConfig.from_dict(config.to_dict()) == config and config.key() != StudyConfig.quick().key()


def test_cli_recipe_authors_needs_full_mode(capsys):
    from poisondiff_lite.cli import main

    assert main(["epa", "--recipe", "authors"]) == 2
    assert "add --full" in capsys.readouterr().err


# -----------------------------------------------------------------------------------------------------------------
#  crafting augmentation
# -----------------------------------------------------------------------------------------------------------------
def test_crafting_augmentation_follows_the_victims():
    assert AttackConfig.full("gm").augment is True  # victims retrained from scratch see crops and flips
    assert AttackConfig.full("gm", setting="transfer").augment is False  # heads see fixed features
    assert AttackConfig.full("bp", setting="transfer", augment=True).augment is True  # an explicit choice stays
    assert AttackConfig.full("fc").augment is False and AttackConfig.full("fc").for_setting("scratch").augment
    assert AttackConfig.quick("bp").for_setting("transfer").augment is False
    with pytest.raises(InvalidChoiceError, match="augment must be True or False"):
        AttackConfig(augment="maybe")


@pytest.mark.parametrize("flip", [False, True])
def test_bilinear_shift_matches_scipy(flip):
    images = torch.rand(6, 3, 9, 11, dtype=torch.float64)
    out = shift_bilinear(images, 2.5, flip=flip, generator=torch.Generator().manual_seed(3))
    draw = torch.rand(6, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float32).double()
    for k in range(6):
        dx, dy = float((draw[k, 0] * 2 - 1) * 2.5), float((draw[k, 1] * 2 - 1) * 2.5)
        flipped = bool(flip and draw[k, 2] < 0.5)
        source = images[k].flip(-1) if flipped else images[k]
        sign = 1 if flipped else -1  # the output samples the input at x + dx (at x − dx of the flipped image)
        expected = np.stack(
            [scipy.ndimage.shift(c.numpy(), (-dy, sign * dx), order=1, mode="grid-constant") for c in source]
        )
        np.testing.assert_allclose(out[k].numpy(), expected, atol=1e-5)


def test_bilinear_shift_by_whole_pixels_is_the_integer_crop():
    from poisondiff_lite.augment import crop_at

    images = torch.rand(4, 3, 8, 8)
    # a shift of exactly -2 / +2 pixels: draw values 0 and 1 at max_shift 2
    out = shift_bilinear(images, 2.0, flip=False, draw=torch.tensor([[0.0, 1.0, 0.9]] * 4))
    crop = crop_at(images, torch.full((4,), 4), torch.zeros(4, dtype=torch.long), 2)  # rows +2, columns -2
    torch.testing.assert_close(out, crop, atol=1e-6, rtol=0)


def test_resized_crop_boxes_follow_torchvision_bounds():
    boxes = resized_crop_boxes(4000, (64, 64), 0.8, torch.Generator().manual_seed(0))
    top, left, h, w = boxes.T
    area = (h * w).float() / 64**2
    assert bool((h <= 64).all() and (w <= 64).all() and (top >= 0).all() and (top + h <= 64).all())
    assert bool((left + w <= 64).all())
    assert float(area.min()) >= 0.8 - 0.05 and float(area.max()) <= 1.0
    ratio = w.float() / h.float()
    assert float(ratio.min()) >= 3 / 4 - 0.05 and float(ratio.max()) <= 4 / 3 + 0.05
    assert len(set(top.tolist())) > 3 and len(set(left.tolist())) > 3  # positions vary


def test_resize_boxes_matches_torchvision_resized_crop():
    from torchvision.transforms.v2 import functional as TF

    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    boxes = torch.tensor([[0, 0, 64, 64], [5, 3, 56, 60], [10, 3, 52, 50]])  # inside the 64 x 64 image
    ours = resize_boxes(images, boxes)
    assert torch.equal(ours[0], images[0])  # the whole image: unchanged
    for k in (1, 2):
        top, left, h, w = boxes[k].tolist()
        theirs = TF.resized_crop(images[k], top, left, h, w, [64, 64], antialias=False)
        inner = (ours[k].int() - theirs.int()).abs()[:, 2:-2, 2:-2]  # the borders differ by edge handling only
        assert int(inner.max()) <= 1


def test_training_with_the_authors_tinyimagenet_augmentation_runs():
    toy = make_toy_bundle()
    cfg = TrainConfig.quick(epochs=1, batch_size=16, resized_crop=0.8, crop_padding=0, normalize="imagenet")
    model, history = train_fresh(toy, cfg, seed=0, device="cpu", show_progress=False)
    assert math.isfinite(history.loss[-1])
    assert torch.allclose(model.mean.flatten(), torch.tensor([0.485, 0.456, 0.406]))


# -----------------------------------------------------------------------------------------------------------------
#  feature collision: the β term and the benchmark's optimiser
# -----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def surrogate():
    toy = make_toy_bundle(train=128)
    model, _ = train_fresh(toy, TrainConfig.quick(epochs=2, batch_size=32), seed=0, device="cpu", show_progress=False)
    return toy, model.eval()


def test_collision_beta_term_is_the_squared_distance_to_the_base(surrogate):
    toy, model = surrogate
    target, base = to_unit(toy.test.images[0]), to_unit(toy.train.images[:5])
    x = (base + 0.02 * torch.randn_like(base)).clamp(0, 1)
    idx = torch.arange(5)
    plain = collision_objective(model, target, AttackConfig(name="fc", augment=False))
    with_beta = collision_objective(model, target, AttackConfig(name="fc", augment=False, beta=0.7), base)
    gen = torch.Generator()
    extra = 0.7 * float(((x - base) ** 2).flatten(1).sum(1).mean())
    expected = float(plain(x, idx, gen).detach()) + extra
    assert float(with_beta(x, idx, gen).detach()) == pytest.approx(expected, rel=1e-6)
    with pytest.raises(InvalidChoiceError, match="belong to feature collision"):
        AttackConfig(name="gm", beta=0.1)


def _benchmark_reference(model, target, base, eps, steps, lr, watermark):
    """One poison at a time, as the benchmark's loop: gradient step, l∞ projection, accept or shrink."""
    with torch.no_grad():
        phi_t = model.features(target[None])[0]
    out = []
    for b in base:
        x = watermark * target + (1 - watermark) * b
        loss = math.inf  # the first step is always taken
        step = lr
        for _ in range(steps):
            xr = x.clone().requires_grad_(True)
            grad = torch.autograd.grad(((model.features(xr[None])[0] - phi_t) ** 2).sum(), xr)[0]
            cand = (b + (x - step * grad - b).clamp(-eps, eps)).clamp(0, 1)
            with torch.no_grad():
                new = float(((model.features(cand[None])[0] - phi_t) ** 2).sum())
            if new <= loss:
                done = float((cand - x).norm() / x.norm()) < 1e-5
                x, loss = cand, new
                if done:
                    break
            else:
                step *= 0.2
        out.append(x - b)
    return torch.stack(out)


def test_benchmark_feature_collision_matches_a_per_poison_loop(surrogate):
    toy, model = surrogate
    attack = AttackConfig.benchmark_fc(steps=15, step_size=0.05, batch_size=3)
    target, base = to_unit(toy.test.images[1]), to_unit(toy.train.images[:5])
    delta, losses, final = benchmark_descent(model, target, base, attack)
    expected = _benchmark_reference(model, target, base, attack.eps, 15, 0.05, 0.3)
    torch.testing.assert_close(delta, expected, atol=1e-5, rtol=0)
    assert all(b <= a + 1e-9 for a, b in zip(losses, losses[1:]))  # never worse: bad steps are undone
    assert float(delta.abs().max()) <= attack.eps + 1e-6
    poisons = craft(attack, model, toy.test.images[1], 1, toy.train.images[:5], toy.train.labels[:5], device="cpu")
    assert int((poisons.images.int() - toy.train.images[:5].int()).abs().max()) <= 8  # 8/255


# -----------------------------------------------------------------------------------------------------------------
#  target groups, ties, τ variant
# -----------------------------------------------------------------------------------------------------------------
def test_middle_group_is_the_authors_positions():
    values = np.arange(50)[::-1].astype(float)  # position k holds rank 49 - k
    groups = epa_buckets(values, 4, middle=True)
    assert sorted(values[groups["middle"]].tolist()) == [23, 24, 25, 26]  # n/2 − 2 to n/2 + 1
    assert "middle" not in epa_buckets(values, 4)


def test_tau_ties_go_to_the_smaller_delta_then_to_data_order():
    tau = np.array([0.0, 0.0, 0.5, 0.0, np.nan])
    delta = np.array([0.3, 0.1, 0.2, 0.1, 0.4])
    assert extreme_order(tau, delta).tolist() == [1, 3, 0, 2, 4]  # NaN (never flips) ranks last
    assert extreme_order(np.array([0.2, 0.1, 0.2])).tolist() == [1, 0, 2]  # δ alone: stable, as the authors


def test_extreme_groups_are_complete_and_a_shared_target_counts_in_both(tmp_path):
    toy = make_toy_bundle()
    config = StudyConfig(
        **{
            **tiny_config().__dict__,
            "extremes": 8,
            "buckets": ("lowest",),
            "per_bucket": 4,
            "attacks": (AttackConfig(name="fc", num_poisons=4, steps=1, restarts=1, setting="transfer"),),
        }
    )
    results = study.run_study(config, data=toy, device="cpu", results_dir=tmp_path, show_progress=False)
    members = int((toy.test.labels == 0).sum())  # 8 airplanes: every one is δ-low and δ-high
    assert members == 8 and len(results.targets) == 8
    groups = {g: sum(g in target_groups(t) for t in results.targets) for g in ("lowest", "δ-low", "δ-high")}
    assert groups == {"lowest": 4, "δ-low": 8, "δ-high": 8}
    table = {r["bucket"]: r["targets"] for r in results.by_bucket() if r["attack"].startswith("fc")}
    assert table == {"lowest": 4, "δ-low": 8, "δ-high": 8}


def test_study_tau_variant_is_recorded_and_both_are_reported(tmp_path):
    toy = make_toy_bundle()
    config = StudyConfig(
        **{
            **tiny_config().__dict__,
            "tau_variant": "authors",
            "attacks": (AttackConfig(name="fc", num_poisons=4, steps=1, restarts=1, setting="transfer"),),
        }
    )
    results = study.run_study(config, data=toy, device="cpu", results_dir=tmp_path, show_progress=False)
    assert study.read_study(results.path).config.tau_variant == "authors"
    surrogate = load_run_model(default_path(config.trajectory, tmp_path))
    for row in results.per_target():
        image = toy.test.images[row["index"]]
        direct = budget_lower_bound(
            surrogate,
            image,
            1,
            toy.train,
            num_batches=config.tau_batches,
            batch_size=config.tau_batch_size,
            variant="authors",
            device="cpu",
        )
        assert row["tau"] == pytest.approx(direct.tau, rel=1e-3, abs=1e-7)
        assert row["tau_authors"] == pytest.approx(row["tau"])
        ratio = lambert_denominator(4, "authors") / lambert_denominator(4, "derived")
        assert row["tau_derived"] == pytest.approx(row["tau"] * ratio)
    corr = {r["metric"]: r for r in results.correlations(metrics=("tau_derived", "tau_authors"))}
    assert corr["tau_derived"]["auroc"] == corr["tau_authors"]["auroc"] or math.isnan(corr["tau_derived"]["auroc"])
    with pytest.raises(InvalidChoiceError, match="unknown metric 'kappa'"):
        results.correlations(metrics=("kappa",))


def test_preset_picks_quick_or_full_by_a_flag_and_swaps_only_the_model():
    assert pdl.TrajectoryConfig.preset(True, "cifar10", seed0=3) == pdl.TrajectoryConfig.quick("cifar10", seed0=3)
    assert pdl.TrajectoryConfig.preset(False, "tinyimagenet") == pdl.TrajectoryConfig.full("tinyimagenet")
    swapped = pdl.TrajectoryConfig.preset(True, "cifar10", model="resnet18")
    quick = pdl.TrajectoryConfig.quick("cifar10")
    assert swapped.train.model == "resnet18" and swapped.key() != quick.key()
    assert dataclasses.replace(swapped, train=dataclasses.replace(swapped.train, model=quick.train.model)) == quick
    assert pdl.AttackConfig.preset(True, "bp", budget=0.02) == pdl.AttackConfig.quick("bp", budget=0.02)
    assert pdl.AttackConfig.preset(False, "fc") == pdl.AttackConfig.full("fc")
    assert pdl.StudyConfig.preset(False, "tinyimagenet") == pdl.StudyConfig.full("tinyimagenet")
    assert pdl.StudyConfig.preset(True, "cifar10", victims=3) == pdl.StudyConfig.quick("cifar10", victims=3)
