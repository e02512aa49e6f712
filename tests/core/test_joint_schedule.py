"""The step -> modality schedule and the joint objective's routing and loss weights."""

import numpy as np
import pytest
import torch

from core.joint import JointObjective, ModalitySchedule, step_uniforms
from core.multimodal import JointSiT
from core.objectives import FlowMatchingObjective
from core.path import TimeDistribution
from core.transformer import SiT

WEIGHTS = {"image": 0.57, "video": 0.30, "audio": 0.13}


def test_schedule_is_a_pure_function_of_seed_and_step():
    a, b = ModalitySchedule(WEIGHTS, seed=3), ModalitySchedule(WEIGHTS, seed=3)
    seq = [a.modality_at(s) for s in range(200)]
    assert seq == [b.modality_at(s) for s in range(200)]  # a fresh object (another rank, a resumed run)
    assert seq[150:] == [b.modality_at(s) for s in range(150, 200)]  # starting anywhere
    assert seq != [ModalitySchedule(WEIGHTS, seed=4).modality_at(s) for s in range(200)]
    # the uniforms are SplitMix64 of (seed, step): fixed numbers, not a torch / numpy generator stream
    assert step_uniforms(3, np.arange(2, dtype=np.uint64)).tolist() == step_uniforms(3, np.array([0, 1], dtype=np.uint64)).tolist()


def test_schedule_frequencies_follow_the_normalised_weights():
    s = ModalitySchedule({"image": 5.7, "video": 3.0, "audio": 1.3}, seed=0)
    counts = s.counts_before(200_000)
    for name, p in WEIGHTS.items():  # binomial sd at n=2e5 is <= 0.0011
        assert abs(counts[name] / 200_000 - p) < 0.005, (name, counts)
    zero = ModalitySchedule({"image": 1.0, "video": 0.0, "audio": 1.0}, seed=0)
    assert zero.names == ["image", "audio"] and "video" not in {zero.modality_at(i) for i in range(1000)}


def test_counts_before_agree_with_the_step_by_step_sequence_across_chunks(monkeypatch):
    s = ModalitySchedule(WEIGHTS, seed=7)
    seq = [s.modality_at(i) for i in range(1000)]
    monkeypatch.setattr(ModalitySchedule, "CHUNK", 64)  # several chunks, one partial
    for step in (0, 1, 64, 999, 1000):
        assert s.counts_before(step) == {m: seq[:step].count(m) for m in WEIGHTS}


@pytest.mark.parametrize("weights", [{"image": -1.0, "video": 1.0}, {"image": 0.0, "video": 0.0}])
def test_schedule_refuses_negative_or_all_zero_weights(weights):
    with pytest.raises(ValueError, match="at least one > 0"):
        ModalitySchedule(weights, seed=0)


def test_joint_objective_routes_to_the_member_and_weights_its_loss():
    torch.manual_seed(0)
    members = {m: SiT(in_channels=c, hidden_size=16, depth=2, num_heads=2, num_classes=2) for m, c in (("a", 4), ("b", 6))}
    model = JointSiT(members)
    objectives = {m: FlowMatchingObjective(TimeDistribution(), label_dropout=0.0) for m in members}
    joint = JointObjective(objectives, {"a": 1.0, "b": 0.25})
    coords = torch.zeros(3, 3, dtype=torch.long)
    coords[:, 2] = torch.arange(3)
    x0 = torch.randn(2, 3, 6)
    torch.manual_seed(1)
    out = joint(model, x0, torch.tensor([0, 1]), coords, modality="b")
    torch.manual_seed(1)
    ref = objectives["b"](model.member("b"), x0, torch.tensor([0, 1]), coords)
    assert torch.equal(out.loss, 0.25 * ref.loss) and torch.equal(out.logs["b/loss"], ref.loss.detach())
    assert set(out.logs) == {"b/loss_gen", "b/loss"}
    assert joint.trainable_state_dict() == {}  # flow matching has no heads


def test_counts_between_are_the_steps_of_each_member_in_a_window(monkeypatch):
    s = ModalitySchedule(WEIGHTS, seed=5)
    seq = [s.modality_at(i) for i in range(300)]
    monkeypatch.setattr(ModalitySchedule, "CHUNK", 32)
    for start, stop in ((0, 300), (17, 18), (40, 41 + 64), (250, 250), (299, 300)):
        assert s.counts_between(start, stop) == {m: seq[start:stop].count(m) for m in WEIGHTS}
