"""The joint model: one shared trunk, per-member projections, label tables and modality embedding."""

import copy

import pytest
import torch

from core.multimodal import JointSiT, build_member_sit, export_member
from core.transformer import SiT

TRUNK = dict(hidden_size=32, depth=3, num_heads=2)


def _joint(seed=0):
    torch.manual_seed(seed)
    members = {"image": SiT(in_channels=12, num_classes=3, **TRUNK),
               "video": SiT(in_channels=24, num_classes=5, pos_axes=("width", "height", "time"), prediction="x", **TRUNK),
               "audio": SiT(in_channels=8, num_classes=2, **TRUNK)}
    model = JointSiT(members)
    with torch.no_grad():  # adaLN-Zero starts every block and the output at zero: move off it
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _coords(n, t=1):
    return torch.stack(torch.meshgrid(torch.arange(t), torch.arange(1), torch.arange(n // t), indexing="ij"), -1).reshape(-1, 3)


BATCH = {"image": (12, _coords(4)), "video": (24, _coords(6, t=2)), "audio": (8, _coords(5))}


def _batch(name, B=3):
    width, coords = BATCH[name]
    return torch.randn(B, coords.shape[0], width), torch.rand(B), coords


def test_each_weight_is_stored_once_and_the_trunk_is_shared():
    model = _joint()
    single = SiT(in_channels=12, num_classes=3, **TRUNK)
    keys = model.state_dict().keys()
    assert sum(k.startswith("blocks.") for k in keys) == sum(k.startswith("blocks.") for k in single.state_dict())
    for name in ("image", "video", "audio"):
        view = model.view(name)
        assert view.blocks is model.blocks and view.t_embedder is model.t_embedder
        assert view.x_embedder is model.x_embedders[name] and view.final_layer.linear is model.out_projs[name]
    n_unique = len({p.data_ptr() for p in model.parameters()})
    assert n_unique == len(list(model.parameters()))
    # the EMA copy keeps the sharing (deepcopy memo), so updating the joint weights updates every member
    ema = copy.deepcopy(model)
    assert ema.view("video").blocks is ema.blocks and ema.view("video").blocks is not model.blocks


def test_projections_get_gradients_only_from_their_members_steps():
    model = _joint()
    x, t, coords = _batch("video")
    model.member("video")(x, t, torch.tensor([0, 4, 5]), coords).pow(2).mean().backward()  # 5 = video's null class
    for name in ("image", "audio"):
        for module in (model.x_embedders[name], model.out_projs[name], model.label_embedders[name]):
            assert all(p.grad is None for p in module.parameters()), name
    for module in (model.x_embedders["video"], model.out_projs["video"], model.label_embedders["video"], model.blocks,
                   model.modality_embed):
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters())
    # only video's row of the modality embedding moved
    assert model.modality_embed.weight.grad[[0, 2]].abs().sum() == 0


def test_members_differ_by_their_modality_embedding():
    model = _joint()
    x, t, coords = _batch("image")
    y = torch.tensor([0, 1, 3])
    before = model.member("image")(x, t, y, coords)
    with torch.no_grad():
        model.modality_embed.weight[1] += 1.0  # video's row: image unchanged
    assert torch.equal(model.member("image")(x, t, y, coords), before)
    with torch.no_grad():
        model.modality_embed.weight[0] += 1.0
    assert not torch.allclose(model.member("image")(x, t, y, coords), before)


@pytest.mark.parametrize("name", ["image", "video", "audio"])
def test_an_exported_member_is_a_plain_sit_with_the_same_velocity(name):
    model = _joint().eval()
    state, arch = export_member(model.state_dict(), model.arch_config(), name)
    single = build_member_sit(state, arch)
    x, t, coords = _batch(name)
    y = torch.tensor([0, 1, single.null_class])
    with torch.no_grad():
        assert torch.equal(single(x, t, y, coords), model.member(name)(x, t, y, coords))
    assert single.prediction == model.view(name).prediction and single.pos_axes == model.view(name).pos_axes


def test_member_model_answers_for_its_member():
    model = _joint()
    video = model.member("video")
    assert (video.in_channels, video.num_classes, video.null_class, video.prediction) == (24, 5, 5, "x")
    with pytest.raises(KeyError, match="not a member"):
        model.member("text")
    with pytest.raises(KeyError, match="not in this joint checkpoint"):
        export_member(model.state_dict(), model.arch_config(), "text")


def test_members_must_share_the_trunk_shape():
    with pytest.raises(ValueError, match="shared trunk.*depth"):
        JointSiT({"a": SiT(in_channels=4, hidden_size=32, depth=2, num_heads=2),
                  "b": SiT(in_channels=4, hidden_size=32, depth=3, num_heads=2)})
