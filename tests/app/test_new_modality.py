"""A new modality = one module + one YAML: train, evaluate and sample it without touching evals/, app/ or run.py.

The module lives next to this test (tests/app/toy_signal_modality.py); the YAML is written into a
temporary config directory that hydra searches besides configs/.
"""

import json
import textwrap

import numpy as np
import pytest
import torch

from app.tasks import main

TOY_YAML = textwrap.dedent("""\
    name: toy_wave
    eval_family: none          # no evaluator network: only the metrics below
    quantize: none             # samples stay float in the npz
    num_classes: 3
    mask_ratio: 0.25
    pos_axes: [width, height]
    time: {dist: uniform, mu: 0.0, sigma: 1.0, shift: 1.0, sample_shift: 1.0}
    dataset: {_target_: toy_signal_modality.WaveDataset, num_classes: 3, per_class: 8, length: 32}
    tokenizer: {_target_: toy_signal_modality.WaveTokenizer, length: 32, patch: 4}
    writer: {_target_: toy_signal_modality.WaveWriter}
    metrics:
      cycles: {_target_: toy_signal_modality.cycle_report, _partial_: true}
    """)


@pytest.fixture
def compose_with_toy(tmp_path, compose):
    extra = tmp_path / "extra_configs"
    (extra / "modality").mkdir(parents=True)
    (extra / "modality" / "toy_wave.yaml").write_text(TOY_YAML)

    def _compose(overrides):
        return compose([f"hydra.searchpath=[file://{extra}]", "modality=toy_wave", "model=micro", "train=smoke",
                        "train.steps=4", "train.ckpt_every=4", "sample.num_steps=4", *overrides])

    return _compose


def test_toy_modality_trains_evaluates_and_samples(compose_with_toy, tmp_path):
    run_dir = tmp_path / "train"
    out = main(compose_with_toy(["eval.num_samples=6", "sample.num_samples=3", f"run_dir={run_dir}"]))
    assert out["steps"] == 4 and (run_dir / "samples" / "final_waves.npy").exists()
    assert np.load(run_dir / "samples" / "final_waves.npy").shape == (3, 32)
    evals = json.loads((run_dir / "eval.json").read_text())
    assert [r["metric"] for r in evals] == ["cycles_cycle_gap"]  # the modality's metric, no evaluator network
    # 4 steps do not learn sines; the value is only bounded: bins 1..16 of a 32-sample wave, classes 1..3
    assert 0.0 <= evals[0]["value"] <= 13.0 and 1.0 <= evals[0]["details"]["mean_cycles"] <= 16.0
    assert "cycles_cycle_gap" in (run_dir / "metrics.jsonl").read_text()  # logged by the trainer hook too

    sample_dir = tmp_path / "sample"
    summary = main(compose_with_toy(["task=sample", f"checkpoint.path={run_dir}", "sample.num_samples=5",
                                     "+sample.batch_size=2", f"run_dir={sample_dir}"]))
    with np.load(summary["npz"]) as z:
        samples, labels = z["arr_0"], z["arr_1"]
    assert samples.dtype == np.float32 and samples.shape == (5, 32)  # quantize: none keeps floats
    assert labels.shape == (5,) and set(labels.tolist()) <= {0, 1, 2}
    assert torch.isfinite(torch.from_numpy(samples)).all()


def test_toy_metric_is_zero_on_real_waves():
    from toy_signal_modality import WaveDataset, cycle_report

    data = WaveDataset()
    real = torch.stack([data[i][0] for i in range(len(data))])
    assert cycle_report(real, data) == {"cycle_gap": 0.0, "mean_cycles": 2.0}  # classes 1, 2, 3 cycles


def test_undeclared_metric_family_is_a_config_error(compose_with_toy, tmp_path):
    from app.config import ConfigError

    with pytest.raises(ConfigError, match="modality.eval_family='pixels'.*configs/modality"):
        main(compose_with_toy(["modality.eval_family=pixels", f"run_dir={tmp_path}"]))
    with pytest.raises(ConfigError, match="modality.quantize='png'"):
        main(compose_with_toy(["modality.quantize=png", f"run_dir={tmp_path}"]))
