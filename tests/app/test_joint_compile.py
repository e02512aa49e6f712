"""`train.compile=true` with `modality=joint` on CPU: the joint loss is compiled (one graph per member)
and trains as the eager run does."""

import json

import pytest
import torch
from torch._dynamo.utils import counters

import run
from core.checkpoint import load_checkpoint

SMALL = ["modality=joint", "model=micro", "train=smoke", "eval=none", "sample.num_samples=2", "sample.num_steps=2",
         "modality.members.image.dataset.per_class=16", "modality.members.audio.dataset.clips_per_class=4",
         "train.log_every=1", "train.steps=4", "train.ckpt_every=4", "method=fm",
         # two members (video left out: every member compiles its own graph, ~1 min each on a busy CPU),
         # with different batch sizes, so the compiled function also sees two batch shapes
         "modality.weights.image=1", "modality.weights.video=0", "modality.weights.audio=1",
         "modality.batch_sizes.image=8", "modality.batch_sizes.audio=16"]


@pytest.mark.slow
def test_compiled_joint_run_matches_eager(compose, tmp_path, monkeypatch):
    # Inductor draws its own random numbers unless told to call torch's: the same noise as eager here.
    monkeypatch.setattr(torch._inductor.config, "fallback_random", True)
    torch._dynamo.reset()
    counters.clear()
    run.main(compose(SMALL + [f"run_dir={tmp_path / 'eager'}"]))
    assert counters["stats"]["unique_graphs"] == 0
    run.main(compose(SMALL + ["train.compile=true", f"run_dir={tmp_path / 'compiled'}"]))
    assert counters["stats"]["unique_graphs"] >= 2  # the joint loss really went through torch.compile
    torch._dynamo.reset()
    logs = {k: [json.loads(line) for line in (tmp_path / k / "metrics.jsonl").read_text().splitlines()]
            for k in ("eager", "compiled")}
    members = [next(m for m in ("image", "audio") if f"{m}/loss" in r) for r in logs["eager"]]
    assert set(members) == {"image", "audio"}  # both graphs ran
    eager, compiled = ([r["loss"] for r in logs[k]] for k in ("eager", "compiled"))
    assert all(torch.isfinite(torch.tensor(compiled)))
    assert compiled == pytest.approx(eager, rel=1e-4)
    a, b = load_checkpoint(tmp_path / "eager")["model"], load_checkpoint(tmp_path / "compiled")["model"]
    for k, v in a.items():
        torch.testing.assert_close(b[k], v, rtol=1e-3, atol=1e-5, msg=k)
