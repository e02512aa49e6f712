"""The `quick` benchmark budget for one modality (image) end to end: hydra compose -> run.main for
fm / repa (offline Inception encoder) / selfflow -> aggregate report; then a rerun skips every cell."""

import json

import pytest
from evals import weights
from experiments.report import write_report
from experiments.runner import cells, load_budget, run_suite

# Smaller than the budget itself so that CI stays ~2 minutes on 2 busy cores: 16 real images,
# 4 generated ones per evaluation, Inception at its minimum input size for the REPA encoder.
TINY = ["modality.dataset.per_class=4", "eval.num_samples=4", "sample.num_samples=4", "sample.num_steps=4",
        "train.batch_size=4", "train.ckpt_every=3"]


@pytest.mark.slow
def test_quick_suite_for_image_end_to_end(tmp_path):
    if not weights.available("inception"):
        pytest.skip("TF-2015 Inception weights absent; run `python -m evals.weights fetch`")
    budget = load_budget("quick")
    budget.variants.repa = list(budget.variants.repa) + ["method.encoder.input_size=75"]
    records = run_suite(budget, tmp_path, modalities=["image"], extra=TINY)
    assert [r["status"] for r in records] == ["finished"] * 3, [r.get("error") for r in records]
    for variant in ("fm", "repa", "selfflow"):
        d = tmp_path / "image" / variant / "seed0"
        evals = {e["metric"]: e for e in json.loads((d / "eval.json").read_text())}
        assert evals["fid"]["value"] > 0 and evals["fid"]["n_fake"] == 4
        steps = [json.loads(x)["step"] for x in (d / "metrics.jsonl").read_text().splitlines() if "fid" in x]
        assert steps == [3, 6]  # evaluated at two checkpoints: a convergence curve
        assert (d / "samples" / "final_grid.png").exists()
    cfg = (tmp_path / "image" / "repa" / "seed0" / "config.yaml").read_text()
    assert "app.repa_encoders.offline_encoder" in cfg  # REPA really used the Inception adapter

    text = write_report(tmp_path).read_text()
    assert "| fm |" in text and "| repa |" in text and "| selfflow |" in text
    assert "not enough seeds (1 < 6) for a verdict" in text  # one seed: the verdict refuses
    assert "same network that computes fid" in text  # the REPA/Inception caveat
    assert (tmp_path / "convergence_image_fid.png").exists()

    again = run_suite(budget, tmp_path, modalities=["image"], extra=TINY)  # resumable: all skipped
    assert [r["wall_s"] for r in again] == [r["wall_s"] for r in records]


def test_quick_budget_grid_is_three_methods_per_modality_and_seed():
    grid = cells(load_budget("quick"), modalities=["image"])
    assert [c.key for c in grid] == ["image/fm/seed0", "image/repa/seed0", "image/selfflow/seed0"]
    assert all("run_dir=" not in o for c in grid for o in c.overrides)


def test_inception_encoder_with_one_token_at_mixed_10_is_the_fid_feature():
    """The adapter runs the metric's own network: one token at mixed_10 = FID's pool3 feature."""
    if not weights.available("inception"):
        pytest.skip("TF-2015 Inception weights absent; run `python -m evals.weights fetch`")
    import torch

    from evals.inception import load_inception
    from app.repa_encoders import InceptionTokenEncoder

    enc = InceptionTokenEncoder(in_dim=12, layer="mixed_10", input_size=299)
    raw = torch.rand(2, 3, 32, 32) * 2 - 1
    z = enc(torch.zeros(2, 1, 12), raw)
    ref = load_inception()[0]((raw + 1) * 127.5)["pool3"]
    assert torch.allclose(z[:, 0], ref, atol=1e-4)
    assert enc(torch.zeros(2, 4, 12), raw).shape == (2, 4, 2048)  # 2x2 token grid
