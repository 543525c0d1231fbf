"""Shipped lab studies: they load, they are what their presets make, their statistics follow from the raw log."""

import fnmatch
import json
import math
import tomllib
from pathlib import Path

import numpy as np
import pytest

import poisondiff_lite as pdl
from poisondiff_lite import shipped
from poisondiff_lite.study import StudyConfig, StudyResults, attack_id
from poisondiff_lite.victims import ResultsLog, asr_interval

ROOT = Path(__file__).resolve().parent.parent
NAMES = sorted(shipped.LAB_STUDIES)


def raw_rows(folder: Path) -> list[dict]:
    """The per-victim rows of a log, read without the package (the header line skipped)."""
    lines = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert "header" in lines[0]
    return lines[1:]


@pytest.mark.parametrize("name", NAMES)
def test_each_lab_study_is_shipped_from_its_current_preset(name):
    preset, command = shipped.LAB_STUDIES[name]
    result = pdl.shipped_study(name)
    # stale results never pass silently: a preset changed since the study ran gives another hash
    assert result.config.key() == preset().key(), f"{name} was run with another preset; rerun it: {command}"
    info = next(s for s in pdl.shipped_studies() if s["name"] == name)
    assert result.complete() == info["complete"], f"{name}: its provenance misstates whether it is finished"
    assert info["targets_done"] == sum(
        all(
            sum(r["key"] == t["key"] and r["attack"] == a for r in result.rows) >= result.config.victims
            for a in result.attack_ids()
        )
        for t in result.targets
    )
    for field in ("command", "code_version", "date", "machine", "wall_seconds", "description"):
        assert info[field], f"{name}: provenance lacks {field}"
    assert info["study_key"] == preset().key() and info["victim_rows"] == len(result.rows)
    assert info["command"] == command, f"{name}: its provenance and shipped.LAB_STUDIES name other commands"


@pytest.mark.parametrize("name", NAMES)
def test_shipped_statistics_follow_from_the_raw_log(name):
    result = pdl.shipped_study(name)
    rows = raw_rows(shipped.shipped_path(name))
    # per target: ASR counted by hand from the raw lines
    for r in result.per_target():
        mine = [row for row in rows if row["key"] == r["key"] and row["attack"] == r["attack"]]
        wins = sum(bool(row["success"]) for row in mine)
        assert (r["victims"], r["successes"]) == (len(mine), wins)
        assert (r["asr_low"], r["asr_high"]) == pytest.approx(asr_interval(wins, len(mine)))
    # correlations: numpy's Pearson over the hand-counted ASR, and AUROC by counting ordered pairs
    table = {(c["attack"], c["metric"]): c for c in result.correlations()}
    for attack in result.config.attacks:
        ident = attack_id(attack)
        outcomes = {
            t["key"]: [bool(row["success"]) for row in rows if row["key"] == t["key"] and row["attack"] == ident]
            for t in result.targets
        }
        done = [t for t in result.targets if outcomes[t["key"]]]  # a partial study: only targets with victims
        for metric in ("epa", "dps"):
            x = np.array([t[metric] for t in done])
            y = np.array([np.mean(outcomes[t["key"]]) for t in done])
            expected = np.corrcoef(x, y)[0, 1] if np.ptp(x) and np.ptp(y) else math.nan
            got = table[(ident, metric)]["pearson"]
            assert (math.isnan(got) and math.isnan(expected)) or got == pytest.approx(expected)
            success = y >= result.config.success_threshold
            pairs = [(a < b) + 0.5 * (a == b) for a in x[success] for b in x[~success]]
            auroc = table[(ident, metric)]["auroc"]
            assert (math.isnan(auroc) and not pairs) or auroc == pytest.approx(np.mean(pairs))


def test_every_shipped_file_is_package_data():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    package = ROOT / "poisondiff_lite"
    files = [p.relative_to(package).as_posix() for p in (package / "shipped").rglob("*") if p.is_file()]
    assert files, "no shipped study found"
    for file in files:
        assert any(fnmatch.fnmatch(file, pattern) for pattern in patterns["poisondiff_lite"]), (
            f"{file} would be left out of a wheel"
        )


def test_unknown_name_lists_the_shipped_ones():
    with pytest.raises(pdl.InvalidChoiceError, match="cifar10-lab"):
        pdl.shipped_study("no-such-study")


def _tiny_study(folder: Path, victims: int) -> StudyResults:
    config = StudyConfig.quick(victims=2)
    ident = attack_id(config.attacks[0])
    folder.mkdir(parents=True)
    (folder / "study.json").write_text(json.dumps(config.to_dict()))
    targets = [
        {
            "key": "0-1-5",
            "index": 5,
            "bucket": "lowest",
            "epa": 0.0,
            "dps": 0.5,
            "delta_step": 0.1,
            "delta_param": 0.2,
            "tau": 1.0,
            "soft_epa": 0.1,
        }
    ]
    (folder / "targets.json").write_text(json.dumps({"targets": targets, "classes": ["a", "b"]}))
    log = ResultsLog(folder / "results.jsonl", {"study": config.key()})
    for v in range(victims):
        log.append({"key": "0-1-5", "attack": ident, "victim": 1000 + v, "success": v == 0, "clean_accuracy": 0.5})
    return pdl.study.read_study(folder)


def test_ship_copies_a_finished_study_with_provenance(tmp_path):
    result = _tiny_study(tmp_path / "run", victims=2)
    folder = shipped.ship(
        result,
        "tiny",
        description="a test",
        command="poisondiff study",
        wall_seconds=12.34,
        destination=tmp_path / "shipped",
    )
    again = pdl.study.read_study(folder)
    assert again.rows == result.rows and again.targets == result.targets
    assert again.config.key() == result.config.key()
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["wall_seconds"] == 12.3 and provenance["victim_rows"] == 2
    assert provenance["complete"] is True and provenance["targets_done"] == 1
    assert not (folder / "poisons").exists()


def test_ship_refuses_an_unfinished_study_unless_marked_partial(tmp_path):
    result = _tiny_study(tmp_path / "run", victims=1)  # the config asks for 2 victims
    with pytest.raises(pdl.InvalidChoiceError, match="not complete"):
        shipped.ship(result, "tiny", description="", command="", wall_seconds=0, destination=tmp_path / "out")
    folder = shipped.ship(
        result, "tiny", description="", command="", wall_seconds=0, allow_partial=True, destination=tmp_path / "out"
    )
    provenance = json.loads((folder / "provenance.json").read_text())
    assert provenance["complete"] is False and provenance["targets_done"] == 0
