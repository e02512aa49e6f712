"""`modality.batch_sizes`: each member of a joint run trains on batches of its own size (the paper's
App. D uses different sizes per modality). Its data order, resume, logs and 2-process runs stay exact."""

import json

import pytest
import torch
from omegaconf import open_dict

import run
from app.joint import batch_sizes, build_joint, check_batch_sizes
from core.checkpoint import load_checkpoint
from core.data import ResumableBatchSampler, data_position
from core.joint import JointTrainer, ModalitySchedule
from run_helpers import one_and_two_gloo_processes

# image 64 items, video 40, audio 24 (4 / 10 / 6 classes)
SMALL = ["modality=joint", "model=micro", "train=smoke", "eval=none", "sample.num_samples=2", "sample.num_steps=2",
         "modality.members.image.dataset.per_class=16", "modality.members.video.dataset.clips_per_class=4",
         "modality.members.audio.dataset.clips_per_class=4", "train.log_every=1"]
EQUAL = ["modality.weights.image=1", "modality.weights.video=1", "modality.weights.audio=1"]
# image: 2 batches per epoch, video 5, audio 1: the resume and gloo tests below cross epochs
SIZES = {"image": 24, "video": 8, "audio": 16}
PER_MEMBER = EQUAL + [f"modality.batch_sizes.{m}={b}" for m, b in SIZES.items()] + ["train.batch_size=4"]


def test_null_means_train_batch_size(compose):
    cfg = compose(["modality=joint", "train.batch_size=12"])
    assert dict(cfg.modality.batch_sizes) == {"image": None, "video": None, "audio": None}
    assert batch_sizes(cfg) == {"image": 12, "video": 12, "audio": 12}
    cfg = compose(["modality=joint", "train.batch_size=12", "modality.batch_sizes.video=8"])
    with open_dict(cfg):
        del cfg.modality.batch_sizes["audio"]
    assert batch_sizes(cfg) == {"image": 12, "video": 8, "audio": 12}  # an absent member: train.batch_size too


@pytest.mark.parametrize("override,message", [
    ("modality.batch_sizes.video=0", r"^modality\.batch_sizes\.video=0: must be an integer >= 1, or null"),
    ("modality.batch_sizes.audio=-4", r"^modality\.batch_sizes\.audio=-4: must be an integer >= 1"),
    ("modality.batch_sizes.image=2.5", r"^modality\.batch_sizes\.image=2\.5: must be an integer"),
    ("modality.batch_sizes.image=8.0", r"^modality\.batch_sizes\.image=8\.0: must be an integer"),
    ("modality.batch_sizes.image=true", r"^modality\.batch_sizes\.image=True: must be an integer"),
    ("modality.batch_sizes.video=many", r"^modality\.batch_sizes\.video='many': must be an integer"),
    ("+modality.batch_sizes.text=4", r"^modality\.batch_sizes\.text: unknown member; the members are"),
    ("modality.batch_sizes=8", r"^modality\.batch_sizes must map members"),
    ("modality.batch_sizes.audio=25", r"^modality\.batch_sizes\.audio=25: member audio's data set has only 24 items"),
])
def test_bad_batch_sizes_fail_with_one_message_naming_the_key(compose, tmp_path, override, message):
    with pytest.raises(run.ConfigError, match=message):
        run.main(compose(SMALL + [override, f"run_dir={tmp_path}"]))
    assert not tmp_path.exists() or not any(tmp_path.iterdir())  # nothing was written


def test_batch_sizes_must_split_over_the_processes(compose):
    cfg = compose(SMALL + ["modality.batch_sizes.video=6", "train.batch_size=4"])
    data = {"image": range(64), "video": range(40)}
    assert check_batch_sizes(cfg, data, world_size=2) == {"image": 4, "video": 6}
    with pytest.raises(run.ConfigError, match=r"^modality\.batch_sizes\.video=6 \(global\) must be divisible by the 4"):
        check_batch_sizes(cfg, data, world_size=4)
    with pytest.raises(run.ConfigError, match=r"^train\.batch_size=4 \(global\) must be divisible by the 3"):
        check_batch_sizes(cfg, {"image": range(64)}, world_size=3)  # a null member's key is train.batch_size


def _member_batches(cfg, steps):
    """Independently: member -> the raw batches its own data order yields for its steps in [0, steps)."""
    counts = ModalitySchedule(dict(cfg.modality.weights), int(cfg.train.seed)).counts_before(steps)
    data = build_joint(cfg)["dataset"].members
    out = {}
    for m, n in counts.items():
        order = iter(ResumableBatchSampler(len(data[m]), SIZES[m], int(cfg.train.seed)))
        out[m] = [torch.stack([data[m][i][0] for i in next(order)]) for _ in range(n)]
    return out


@pytest.mark.slow
def test_each_member_trains_on_its_own_batches_and_logs_their_items(compose, tmp_path, monkeypatch):
    seen = []
    real = JointTrainer.compute_loss

    def spy(self, batch, y):
        seen.append((batch[0], batch[1].clone()))
        return real(self, batch, y)

    monkeypatch.setattr(JointTrainer, "compute_loss", spy)
    cfg = compose(SMALL + PER_MEMBER + ["method=fm", f"run_dir={tmp_path}"])
    out = run.main(cfg)
    schedule = ModalitySchedule(dict(cfg.modality.weights), 0)
    assert [m for m, _ in seen] == [schedule.modality_at(s) for s in range(6)]
    want = _member_batches(cfg, 6)
    got = {m: [raw for k, raw in seen if k == m] for m in SIZES}
    assert {m: len(v) for m, v in got.items()} == {m: len(v) for m, v in want.items()} and all(want.values())
    for m in SIZES:
        for a, b in zip(got[m], want[m]):
            assert torch.equal(a, b), m  # the same items, in the member's own seeded order
    # logs: samples_per_s / steps_per_s is the items of the logged step (log_every=1)
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    per_step = [r["samples_per_s"] / r["steps_per_s"] for r in metrics if "samples_per_s" in r]
    assert per_step == pytest.approx([SIZES[m] for m, _ in seen], rel=1e-9)
    assert "| batch size | image 24, video 8, audio 16 |" in (tmp_path / "report.md").read_text()
    assert out["steps"] == 6


@pytest.mark.slow
def test_resume_recounts_each_members_position_in_its_own_batches(compose, tmp_path):
    common = SMALL + PER_MEMBER + ["method=selfflow", "train.steps=10", "train.ckpt_every=5"]
    run.main(compose(common + [f"run_dir={tmp_path / 'full'}"]))
    run.main(compose(common + ["train.steps=5", f"run_dir={tmp_path / 'part'}"]))
    run.main(compose(common + [f"train.resume={tmp_path / 'part'}", f"run_dir={tmp_path / 'part'}"]))
    full, resumed = load_checkpoint(tmp_path / "full"), load_checkpoint(tmp_path / "part")
    for part in ("model", "objective"):
        for k, v in full[part].items():
            assert torch.equal(v, resumed[part][k]), f"{part}.{k}"
    for k, v in full["ema"]["model"].items():
        assert torch.equal(v, resumed["ema"]["model"][k]), k
    counts = ModalitySchedule({m: 1 for m in SIZES}, 0).counts_before(10)
    lengths = {"image": 64, "video": 40, "audio": 24}
    assert full["data_position"] == resumed["data_position"] == {
        m: data_position(counts[m], lengths[m], SIZES[m]) for m in SIZES}
    before = ModalitySchedule({m: 1 for m in SIZES}, 0).counts_before(5)
    assert before["image"] >= 2 and before["audio"] >= 1  # both finished an epoch before the resume at step 5


@pytest.mark.slow
@pytest.mark.parametrize("sharding", ["ddp", "fsdp"])
def test_two_gloo_processes_match_one_process(compose, tmp_path, free_port, sharding):
    args = SMALL + PER_MEMBER + ["method=selfflow", "train.steps=6"]
    one, two = one_and_two_gloo_processes(compose, args, tmp_path, free_port, f"train.fsdp={sharding == 'fsdp'}")
    assert one["step"] == two["step"] == 6 and one["data_position"] == two["data_position"]
    for part in ("model", "objective"):
        for k, v in one[part].items():
            torch.testing.assert_close(two[part][k], v, rtol=1e-5, atol=1e-6, msg=f"{part}.{k}")
    logs = [[json.loads(line) for line in (tmp_path / d / "metrics.jsonl").read_text().splitlines()] for d in ("one", "two")]
    items = [[r["samples_per_s"] / r["steps_per_s"] for r in log if "samples_per_s" in r] for log in logs]
    assert items[0] == pytest.approx(items[1], rel=1e-9)  # global items per step, whatever the world size
