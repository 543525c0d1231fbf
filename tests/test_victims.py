"""Victims' results log: torn and damaged lines never lose a valid row, one writer per study."""

import json

import pytest
import torch

from poisondiff_lite import ResultsFileError
from poisondiff_lite.victims import ResultsLog


def test_log_drops_a_torn_line_and_refuses_another_study(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path, {"study": "abc"})
    log.append({"key": "0-1-5", "attack": "gm", "victim": 0, "success": True, "clean_accuracy": 0.5})
    with open(path, "ab") as handle:  # a crash in the middle of the next append
        handle.write(b'{"key": "0-1-5", "attack": "gm", "vic')
    again = ResultsLog(path, {"study": "abc"})
    assert again.done() == {("0-1-5", "gm", 0)}
    again.append({"key": "0-1-5", "attack": "gm", "victim": 1, "success": False, "clean_accuracy": 0.5})
    lines = path.read_text().splitlines()
    assert len(lines) == 3 and all(json.loads(line) for line in lines)
    with pytest.raises(ResultsFileError, match="belongs to another study"):
        ResultsLog(path, {"study": "xyz"})


def test_a_damaged_middle_line_is_skipped_and_reported_never_deleted(tmp_path):
    path = tmp_path / "results.jsonl"
    log = ResultsLog(path, {"study": "abc"})
    for victim in range(4):
        log.append(
            {"key": "0-1-5", "attack": "gm", "victim": victim, "success": victim % 2 == 0, "clean_accuracy": 0.5}
        )
    lines = path.read_bytes().split(b"\n")
    lines[2] = lines[2][:20] + b"\xff garbage"  # line 3 (victim 1) damaged on disk, the lines after it intact
    path.write_bytes(b"\n".join(lines))
    before = path.read_bytes()
    with pytest.warns(UserWarning, match=r"skipped 1 damaged line\(s\) \(3\)"):
        reader = ResultsLog.read(path)
    assert [r["victim"] for r in reader.rows] == [0, 2, 3] and reader.damaged == [3]
    assert path.read_bytes() == before, "a reader must never change the file"
    with pytest.warns(UserWarning, match="damaged"):
        writer = ResultsLog(path, {"study": "abc"})
    assert writer.done() == {("0-1-5", "gm", v) for v in (0, 2, 3)}  # victim 1 is rerun, the others are kept
    writer.append({"key": "0-1-5", "attack": "gm", "victim": 1, "success": False, "clean_accuracy": 0.5})
    with pytest.warns(UserWarning):
        assert sorted(r["victim"] for r in ResultsLog.read(path).rows) == [0, 1, 2, 3]


def test_only_the_writer_cuts_a_torn_tail(tmp_path):
    path = tmp_path / "results.jsonl"
    ResultsLog(path, {"study": "abc"}).append(
        {"key": "k", "attack": "gm", "victim": 0, "success": True, "clean_accuracy": 0.5}
    )
    with open(path, "ab") as handle:
        handle.write(b'{"key": "k", "attack": "gm", "vic')
    before = path.read_bytes()
    reader = ResultsLog.read(path)
    assert len(reader.rows) == 1 and path.read_bytes() == before
    with pytest.raises(ResultsFileError, match="read-only"):
        reader.append({"key": "k", "attack": "gm", "victim": 1, "success": True, "clean_accuracy": 0.5})
    ResultsLog(path, {"study": "abc"})
    assert path.read_bytes() == before[: before.rindex(b"\n") + 1]


def _one_head_alone(features, labels, num_classes, cfg, seed):
    """The plain loop: one head, its own optimiser and schedule (how heads trained before they trained together)."""
    import torch.nn.functional as F

    from poisondiff_lite.victims import HEAD_LOGIT_SCALE

    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    head = torch.nn.Linear(features.shape[1], num_classes)
    scale = features.norm(dim=1).mean().clamp_min(1e-6)
    x, y = features / scale, labels.long()
    optimizer = torch.optim.SGD(head.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.epochs * -(-len(x) // cfg.batch_size))
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        for b in range(0, len(x), cfg.batch_size):
            idx = order[b : b + cfg.batch_size]
            loss = F.cross_entropy(head(x[idx]) * HEAD_LOGIT_SCALE, y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return head, scale


def test_heads_trained_together_train_as_each_alone():
    from poisondiff_lite.victims import HEAD_LOGIT_SCALE, HeadConfig, head_logits, train_heads

    gen = torch.Generator().manual_seed(0)
    features = torch.randn(300, 16, generator=gen) + torch.arange(300)[:, None] % 5 * 0.3
    labels = torch.arange(300) % 5
    cfg = HeadConfig(epochs=4, batch_size=64)  # 300 / 64: the last batch is short
    seeds = [3, 11, 7]
    together = train_heads(features, labels, 5, cfg, seeds)
    probe = torch.randn(40, 16, generator=gen)
    for seed, head in zip(seeds, together):
        alone, scale = _one_head_alone(features, labels, 5, cfg, seed)
        assert head.feature_scale == float(scale)
        assert torch.allclose(head.weight, alone.weight, atol=1e-5) and torch.allclose(head.bias, alone.bias, atol=1e-5)
        expected = alone(probe / scale) * HEAD_LOGIT_SCALE
        assert torch.allclose(head_logits(head, probe), expected, atol=1e-4)
    assert not torch.allclose(together[0].weight, together[1].weight)  # the seeds do differ
