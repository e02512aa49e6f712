"""configs/method/repa*.yaml: which encoder each REPA name means, and the projector size per model preset."""

import pytest
import torch
from hydra.utils import instantiate

from core.objectives.repa import REPAObjective, build_projector
from core.path import TimeDistribution
from core.transformer import SiT

n_params = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731


def test_method_repa_is_the_pretrained_offline_encoder(compose):
    for modality in ("image", "video", "audio"):
        method = compose([f"modality={modality}", "method=repa"]).method
        assert method.name == "repa"
        assert method.encoder._target_ == "app.repa_encoders.offline_encoder"
        assert method.encoder.backbone == "auto" and method.encoder.modality == modality


def test_method_repa_random_is_the_weight_free_stand_in_under_its_own_name(compose):
    cfg = compose(["method=repa_random", "model=micro"])
    assert cfg.method.name == "repa_random"  # run directories and reports keep it apart from repa
    enc = instantiate(cfg.method.encoder, in_dim=192)
    assert type(enc).__name__ == "RandomTokenEncoder" and enc.feature_dim == 256


@pytest.mark.parametrize("model,width", [("micro", 256), ("tiny", 512), ("sit_s2", 2048), ("sit_b2", 2048),
                                         ("sit_l2", 2048), ("sit_xl2", 2048)])
def test_projector_width_follows_the_model_preset(compose, model, width):
    cfg = compose([f"model={model}", "method=repa"])
    assert cfg.method.objective.projector_dim == width
    if model in ("micro", "tiny"):
        assert width == 4 * cfg.model.hidden_size


def test_a_model_config_without_the_key_gets_repas_2048(compose):
    assert compose(["model=micro", "method=repa", "~model.repa_projector_dim"]).method.objective.projector_dim == 2048


@pytest.mark.parametrize("model", ["micro", "tiny"])
@pytest.mark.parametrize("encoder_width", [256, 768])  # CREPE-tiny / random stand-in; DINOv2-B / Inception mixed_7
def test_small_presets_projector_is_smaller_than_the_backbone(compose, model, encoder_width):
    """micro: 0.35 M backbone; the 2048-wide projector was 4.9-5.9 M (14-17x), now 0.15-0.28 M."""
    cfg = compose([f"model={model}", "method=repa_random"])
    m = cfg.model
    backbone = SiT(in_channels=192, hidden_size=m.hidden_size, depth=m.depth, num_heads=m.num_heads,
                   mlp_ratio=m.mlp_ratio, num_classes=10)
    projector = build_projector(m.hidden_size, cfg.method.objective.projector_dim, encoder_width)
    assert n_params(projector) < n_params(backbone)
    if model == "micro":
        assert n_params(build_projector(m.hidden_size, 2048, encoder_width)) > 10 * n_params(backbone)


def test_the_projector_shares_the_backbones_gradient_clip(compose, tmp_path):
    """train.grad_clip is one global norm over backbone + projector (as REPA); the encoder is never trained."""
    from core.trainer import Trainer, TrainConfig
    from modalities.image import PixelPatchTokenizer

    cfg = compose(["model=micro", "method=repa_random"])
    model = SiT(in_channels=12, hidden_size=16, depth=2, num_heads=2, num_classes=2)
    encoder = instantiate(cfg.method.encoder, in_dim=12)
    objective = REPAObjective(TimeDistribution(), hidden_size=16, depth=2, encoder=encoder, projector_dim=64)
    data = [(torch.zeros(3, 8, 8), 0)] * 4
    trainer = Trainer(model, objective, PixelPatchTokenizer(8, 3, 2), data,
                      TrainConfig(steps=1, batch_size=4, ckpt_every=0, progress=False), tmp_path)
    clipped = {id(p) for p in trainer.params}
    assert {id(p) for p in objective.projector.parameters()} <= clipped
    assert {id(p) for p in model.parameters()} <= clipped
    assert not {id(p) for p in objective.encoder.parameters()} & clipped
