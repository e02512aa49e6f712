"""Text conditioning in the core: vocabulary, encoder, joint/cross blocks, TextSiT, text dropout."""

import pytest
import torch

from core.objectives import FlowMatchingObjective, SelfFlowObjective, drop_labels
from core.path import TimeDistribution
from core.text.encoder import OfflineTextEncoder, masked_mean
from core.text.model import TextSiT, text_level
from core.text.vocab import PAD, UNK, Vocabulary
from core.text_blocks import JointBlock
from core.transformer import Conditioning, SiT

CAPTIONS = ["a small red circle at the top", "a large blue square", "a red cross"]


def _coords(grid=4):
    h, w = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    return torch.stack([torch.zeros_like(h), h, w], -1).reshape(-1, 3)


def _model(arch="joint", **kw):
    torch.manual_seed(0)
    vocab = Vocabulary.build(CAPTIONS)
    m = TextSiT(in_channels=12, hidden_size=32, depth=3, num_heads=2, vocab=vocab.tokens, max_text_len=10,
                text_arch=arch, **kw)
    with torch.no_grad():  # leave adaLN-Zero: non-zero gates so every path matters
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return m.eval(), vocab


def test_vocabulary_is_deterministic_with_padding_and_unknown_ids():
    v1, v2 = Vocabulary.build(CAPTIONS), Vocabulary.build(list(reversed(CAPTIONS)))
    assert v1.tokens == v2.tokens and v1.tokens[:2] == ["<pad>", "<unk>"]
    assert v1.tokens[2] == "a"  # the most frequent word first
    ids = v1.encode(["a red circle", "a purple circle", ""], max_len=5)
    assert ids.shape == (3, 5) and ids[0, 3:].eq(PAD).all() and ids[2].eq(PAD).all()
    assert ids[1, 1] == UNK and v1.decode(ids[0]) == "a red circle"
    assert v1.encode(["a b c d e f g"], 3).shape == (1, 3)


def test_offline_encoder_masks_padding_and_encodes_the_empty_prompt_as_zero():
    torch.manual_seed(0)
    enc = OfflineTextEncoder(vocab_size=12, width=16, depth=2, heads=2, max_len=8).eval()
    ids = torch.tensor([[3, 4, 5, 0, 0], [0, 0, 0, 0, 0]])
    tokens, mask = enc(ids)
    assert mask.tolist() == [[True] * 3 + [False] * 2, [False] * 5]
    assert tokens[0, 3:].abs().sum() == 0 and tokens[1].abs().sum() == 0
    longer, _ = enc(torch.cat([ids, torch.zeros(2, 3, dtype=torch.long)], 1))  # more padding: same tokens
    torch.testing.assert_close(longer[:, :5], tokens, rtol=0, atol=1e-6)
    assert masked_mean(tokens, mask)[1].abs().sum() == 0


def test_text_level_global_and_mean():
    t = torch.tensor([[0.2, 0.8], [0.5, 0.1]])
    group = torch.tensor([[0, 0, 0, 1], [1, 1, 0, 0]])
    assert torch.allclose(text_level(t, group, "global"), torch.tensor([0.2, 0.5]))
    assert torch.allclose(text_level(t, group, "mean"), torch.tensor([0.35, 0.3]))
    assert torch.equal(text_level(t[:, 0], None, "mean"), t[:, 0])


def test_joint_attention_ignores_padded_text_tokens():
    torch.manual_seed(0)
    block = JointBlock(16, 2)
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x, txt = torch.randn(2, 5, 16), torch.randn(2, 4, 16)
    mask = torch.tensor([[True, True, False, False], [True, False, False, False]])
    cond = Conditioning(rows=torch.randn(2, 16), index=None)
    txt_cond = torch.randn(2, 16)
    out_x, out_t = block(x, cond, None, txt, txt_cond, mask)
    other = torch.where(mask[..., None], txt, 100 * torch.randn_like(txt))  # only padded positions change
    out_x2, out_t2 = block(x, cond, None, other, txt_cond, mask)
    torch.testing.assert_close(out_x2, out_x, rtol=0, atol=1e-5)
    torch.testing.assert_close(out_t2[mask], out_t[mask], rtol=0, atol=1e-5)
    unmasked, _ = block(x, cond, None, other, txt_cond, torch.ones_like(mask))
    assert (unmasked - out_x).abs().max() > 1e-2  # the mask is what hides them


@pytest.mark.parametrize("arch", ["joint", "cross"])
def test_padding_ids_of_different_lengths_give_the_same_velocity(arch):
    model, vocab = _model(arch)
    x, t = torch.randn(2, 16, 12), torch.rand(2)
    short, long = vocab.encode(CAPTIONS[:2], 8), vocab.encode(CAPTIONS[:2], 10)
    torch.testing.assert_close(model(x, t, long, _coords()), model(x, t, short, _coords()), rtol=0, atol=1e-5)


@pytest.mark.parametrize("arch", ["joint", "cross"])
def test_empty_prompt_is_exactly_the_class_free_path(arch):
    """With the empty prompt (all padding) the text model's velocity equals a plain SiT with
    num_classes=0 (label = its null row) carrying the text model's data-path weights: the text stream
    is masked out of every attention, the pooled vector is zero, cross-attention adds zero."""
    model, _ = _model(arch)
    sit = SiT(in_channels=12, hidden_size=32, depth=3, num_heads=2, num_classes=0).eval()
    missing, _ = sit.load_state_dict(model.state_dict(), strict=False)
    assert missing == []  # every SiT weight comes from the text model
    x, coords = torch.randn(3, 16, 12), _coords()
    empty = torch.zeros(3, 10, dtype=torch.long)
    null = torch.zeros(3, dtype=torch.long)
    t = torch.rand(3)
    torch.testing.assert_close(model(x, t, empty, coords), sit(x, t, null, coords), rtol=0, atol=1e-5)
    levels, group = torch.rand(3, 2), (torch.rand(3, 16) < 0.25).long()  # Self-Flow's two levels
    torch.testing.assert_close(model(x, levels, empty, coords, group=group), sit(x, levels, null, coords, group=group),
                               rtol=0, atol=1e-5)
    caption = Vocabulary(model.vocab).encode(CAPTIONS, 10)
    assert (model(x, t, caption, coords) - sit(x, t, null, coords)).abs().max() > 1e-3


def test_arch_config_round_trip_rebuilds_the_same_model():
    model, vocab = _model("joint", text_time="mean")
    clone = TextSiT.from_arch_config(model.arch_config())
    clone.load_state_dict(model.state_dict())
    x, t, y = torch.randn(2, 16, 12), torch.rand(2), vocab.encode(CAPTIONS[:2], 10)
    assert torch.equal(clone.eval()(x, t, y, _coords()), model(x, t, y, _coords()))
    assert clone.text_time == "mean" and clone.vocab == model.vocab and clone.null_class == PAD


def test_drop_labels_drops_whole_captions_and_keeps_label_draws():
    torch.manual_seed(1)
    y = torch.randint(2, 9, (64, 6))
    dropped = drop_labels(y, 0.5, 0)
    rows_dropped = dropped.eq(0).all(1)
    assert torch.equal(dropped[~rows_dropped], y[~rows_dropped]) and 10 < int(rows_dropped.sum()) < 54
    torch.manual_seed(2)
    labels = drop_labels(torch.arange(64) % 10, 0.3, 10)
    torch.manual_seed(2)
    expected = torch.where(torch.rand(64) < 0.3, 10, torch.arange(64) % 10)  # the draws of the label path
    assert torch.equal(labels, expected)


class _Recorder(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.seen = model, []

    def forward(self, x, t, y, coords, **kw):
        self.seen.append(y.clone())
        return self.model(x, t, y, coords, **kw)

    def __getattr__(self, name):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.model, name)


def test_text_dropout_is_shared_by_student_and_teacher():
    model, vocab = _model("joint")
    student, teacher = _Recorder(model), _Recorder(model)
    obj = SelfFlowObjective(TimeDistribution(), hidden_size=32, depth=3, label_dropout=0.5)
    y = vocab.encode(CAPTIONS * 6, 10)
    torch.manual_seed(0)
    obj(student, torch.randn(18, 16, 12), y, _coords(), teacher=teacher)
    (ys,), (yt,) = student.seen, teacher.seen
    assert torch.equal(ys, yt)
    dropped = ys.eq(PAD).all(1)
    assert 0 < int(dropped.sum()) < 18 and torch.equal(ys[~dropped], y[~dropped])


@pytest.mark.parametrize("arch", ["joint", "cross"])
@pytest.mark.parametrize("objective", ["fm", "selfflow", "selfflow_separated"])
def test_a_training_step_reaches_every_text_parameter(arch, objective):
    model, vocab = _model(arch)
    model.train()
    obj = (FlowMatchingObjective(TimeDistribution()) if objective == "fm"
           else SelfFlowObjective(TimeDistribution(), hidden_size=32, depth=3,
                                  attention_separation=objective == "selfflow_separated"))
    out = obj(model, torch.randn(6, 16, 12), vocab.encode(CAPTIONS * 2, 10), _coords(), teacher=model)
    out.loss.backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == [] and torch.isfinite(out.loss)


def test_pretrained_features_input_masks_padding_and_empty_is_class_free():
    torch.manual_seed(0)
    model = TextSiT(in_channels=12, hidden_size=32, depth=2, num_heads=2, feature_dim=7, max_text_len=6).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    feats = torch.randn(2, 6, 8)
    feats[..., 0] = torch.tensor([[1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]], dtype=torch.float)
    x, t, coords = torch.randn(2, 16, 12), torch.rand(2), _coords()
    other = feats.clone()
    other[..., 1:] = torch.where(feats[..., :1] > 0.5, feats[..., 1:], 50 * torch.randn(2, 6, 7))
    torch.testing.assert_close(model(x, t, other, coords), model(x, t, feats, coords), rtol=0, atol=1e-5)
    sit = SiT(in_channels=12, hidden_size=32, depth=2, num_heads=2, num_classes=0).eval()
    sit.load_state_dict(model.state_dict(), strict=False)
    null = torch.zeros(2, dtype=torch.long)
    torch.testing.assert_close(model(x, t, torch.zeros_like(feats), coords), sit(x, t, null, coords), rtol=0, atol=1e-5)
    assert drop_labels(feats, 0.999, model.null_class).abs().sum() == 0  # a dropped caption is the empty prompt


def test_pretrained_encoder_cache_runs_each_caption_once(tmp_path):
    from core.text.pretrained import PretrainedTextEncoder

    enc = PretrainedTextEncoder.__new__(PretrainedTextEncoder)  # no transformers here: stub the network
    enc.max_len, enc.feature_dim, enc.cache, calls = 4, 3, tmp_path / "k", []

    def run(captions):
        calls.extend(captions)
        return torch.stack([torch.full((4, 4), float(len(c))) for c in captions])

    enc._run = run
    first = enc.encode(["ab", "", "abc", "ab"])
    assert calls == ["ab", "abc"] and first[1].abs().sum() == 0 and first[0, 0, 0] == 2
    assert torch.equal(first[3], first[0])
    second = enc.encode(["abc", "ab"])
    assert calls == ["ab", "abc"] and torch.equal(second, first[[2, 0]])  # from the on-disk cache
