"""The joint model with text conditioning: one text encoder and text stream shared by every member,
per-member projections, the empty prompt as the joint class-free path, bit-exact member export."""

import copy

import pytest
import torch

from core.multimodal import JointSiT, build_member_sit, export_member
from core.text.model import TextSiT
from core.text.vocab import Vocabulary
from core.transformer import SiT

TRUNK = dict(hidden_size=32, depth=3, num_heads=2)
CAPTIONS = ["a small red circle", "a green digit 7 moving up", "a high flute melody of three notes"]
VOCAB = Vocabulary.build(CAPTIONS)
WIDTHS = {"image": 12, "video": 24, "audio": 8}
AXES = {"image": ("width", "height"), "video": ("width", "height", "time"), "audio": ("width", "height")}


def _coords(n, t=1):
    return torch.stack(torch.meshgrid(torch.arange(t), torch.arange(1), torch.arange(n // t), indexing="ij"), -1).reshape(-1, 3)


COORDS = {"image": _coords(4), "video": _coords(6, t=2), "audio": _coords(5)}


def _members(cls=TextSiT, **text):
    kw = dict(vocab=VOCAB.tokens, max_text_len=8, **text) if cls is TextSiT else dict(num_classes=0)
    return {m: cls(in_channels=w, pos_axes=AXES[m], prediction="x" if m == "video" else "v", **TRUNK, **kw)
            for m, w in WIDTHS.items()}


def _joint(arch="joint", seed=0):
    torch.manual_seed(seed)
    model = JointSiT(_members(text_arch=arch))
    with torch.no_grad():  # off adaLN-Zero / zero cross-attention output: every path matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def _batch(name, B=3):
    return torch.randn(B, COORDS[name].shape[0], WIDTHS[name]), torch.rand(B), COORDS[name]


def _text_params(model):
    """The shared text path: encoder, pooled MLP and the blocks' text-stream weights."""
    out = {f"text_encoder.{k}": p for k, p in model.text_encoder.named_parameters()}
    out.update({f"pooled_mlp.{k}": p for k, p in model.pooled_mlp.named_parameters()})
    out.update({f"blocks.{k}": p for k, p in model.blocks.named_parameters() if ".txt_" in k or ".cross." in k})
    return out


def test_the_text_path_is_shared_and_stored_once():
    model = _joint()
    for name in WIDTHS:
        view = model.view(name)
        assert view.text_encoder is model.text_encoder and view.pooled_mlp is model.pooled_mlp
        assert view.blocks is model.blocks
    keys = list(model.state_dict())
    assert sum(k.startswith("text_encoder.embed.") for k in keys) == 1
    assert len({p.data_ptr() for p in model.parameters()}) == len(list(model.parameters()))
    assert [k for k in keys if "label_embedders" in k] == [f"label_embedders.{m}.embedding_table.weight" for m in WIDTHS]
    ema = copy.deepcopy(model)  # the EMA teacher keeps the sharing, on its own copy
    assert ema.view("audio").text_encoder is ema.text_encoder and ema.text_encoder is not model.text_encoder


@pytest.mark.parametrize("arch", ["joint", "cross"])
def test_text_stream_learns_from_every_member_and_projections_only_from_their_own(arch):
    model = _joint(arch)
    text = _text_params(model)
    assert len(text) > 10
    for name in WIDTHS:
        model.zero_grad(set_to_none=True)
        x, t, coords = _batch(name)
        y = VOCAB.encode(CAPTIONS, 8)
        model.member(name)(x, t, y, coords).pow(2).mean().backward()
        for key, p in text.items():
            assert p.grad is not None and p.grad.abs().sum() > 0, (name, key)
        for other in WIDTHS:
            for module in (model.x_embedders[other], model.out_projs[other], model.label_embedders[other]):
                got = [p.grad is not None and p.grad.abs().sum() > 0 for p in module.parameters()]
                assert all(got) if other == name else not any(got), (name, other)
        rows = model.modality_embed.weight.grad.abs().sum(1) > 0
        assert rows.tolist() == [m == name for m in WIDTHS]


@pytest.mark.parametrize("arch", ["joint", "cross"])
def test_empty_prompt_is_exactly_the_joint_class_free_path(arch):
    """With the empty prompt every member's velocity equals that of a label JointSiT of num_classes=0
    members (the null row plus the modality embedding) holding the text model's data-path weights."""
    model = _joint(arch).eval()
    torch.manual_seed(1)
    plain = JointSiT(_members(SiT)).eval()
    missing, _ = plain.load_state_dict(model.state_dict(), strict=False)
    assert missing == []  # every weight of the class-free joint model comes from the text model
    empty, caption = torch.zeros(3, 8, dtype=torch.long), VOCAB.encode(CAPTIONS, 8)
    null = torch.zeros(3, dtype=torch.long)
    for name in WIDTHS:
        x, t, coords = _batch(name)
        with torch.no_grad():
            got, want = model.member(name)(x, t, empty, coords), plain.member(name)(x, t, null, coords)
            torch.testing.assert_close(got, want, rtol=0, atol=1e-5)
            levels, group = torch.rand(3, 2), (torch.rand(3, coords.shape[0]) < 0.25).long()  # Self-Flow's levels
            torch.testing.assert_close(model.member(name)(x, levels, empty, coords, group=group),
                                       plain.member(name)(x, levels, null, coords, group=group), rtol=0, atol=1e-5)
            assert (model.member(name)(x, t, caption, coords) - want).abs().max() > 1e-3


@pytest.mark.parametrize("arch", ["joint", "cross"])
@pytest.mark.parametrize("name", list(WIDTHS))
def test_an_exported_text_member_is_a_plain_text_sit_with_the_same_velocity(arch, name):
    model = _joint(arch).eval()
    state, arch_cfg = export_member(model.state_dict(), model.arch_config(), name)
    single = build_member_sit(state, arch_cfg)
    assert isinstance(single, TextSiT) and single.vocab == VOCAB.tokens and single.text_arch == arch
    x, t, coords = _batch(name)
    y = VOCAB.encode(CAPTIONS[:2] + [""], 8)  # two captions and the empty prompt (CFG's null)
    with torch.no_grad():
        assert torch.equal(single(x, t, y, coords), model.member(name)(x, t, y, coords))


def test_members_must_agree_on_the_text_settings_and_conditioning_kind():
    members = _members()
    members["audio"] = TextSiT(in_channels=8, vocab=Vocabulary.build(["other words"]).tokens, max_text_len=8, **TRUNK)
    with pytest.raises(ValueError, match=r"member 'audio' differs .* shared text settings \['vocab'\]"):
        JointSiT(members)
    mixed = _members()
    mixed["audio"] = SiT(in_channels=8, num_classes=2, **TRUNK)
    with pytest.raises(ValueError, match="mix text and label conditioning"):
        JointSiT(mixed)
