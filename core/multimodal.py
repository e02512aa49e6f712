"""One SiT trunk for several modalities (the paper's App. D multi-modal model).

Per modality ("member"): the input projection (token width C_m -> D), the output projection
(D -> C_m), the positional axes and a label table with its own null row (so CFG's unconditional
branch of a member is that member's null class). Shared: the timestep embedder, every block, the
final layer's adaLN, and a learned modality embedding ``e_m`` added to the conditioning:

    c = t_embed(t) + label_m(y) + e_m          (the SiT conditioning plus e_m)

Each member is exposed as a *view*: a real :class:`core.transformer.SiT` whose submodules are the
joint model's (no copy), so a member runs exactly the single-modality forward, and its weights
export as a plain single-modality SiT checkpoint (:func:`export_member`, ``e_m`` folded into the
label table). Views are not registered submodules: the joint ``state_dict`` holds every weight once.

Text conditioning (members are :class:`core.text.model.TextSiT`, docs/joint_training.md): the text
encoder (offline word encoder over the union of the members' captions, or the pretrained features'
adapter), the pooled-text MLP and the text stream inside every block (joint attention's text QKV,
MLP and adaLN, or cross-attention) are shared like the rest of the trunk; the per-member "label
table" is the text model's single null row, to which ``e_m`` is added as to a label row.

Objectives and samplers receive a :class:`MemberModel`, a callable that routes through the joint
model's ``__call__`` (so DDP/FSDP2 hooks on the root module run) and answers ``null_class``,
``num_classes``, ``in_channels``... for its member.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from .text.model import PooledTextEmbedder, TextSiT
from .transformer import SiT


class ModalityLabelEmbedder(nn.Module):
    """``y (B,) -> label_m(y) + e_m (B, D)``: a member's label table plus its modality embedding."""

    def __init__(self, labels: nn.Module, modality_embed: nn.Embedding, index: int):
        super().__init__()
        self.labels, self.modality_embed, self.index = labels, modality_embed, index

    @property
    def num_classes(self) -> int:
        return self.labels.num_classes

    @property
    def null_class(self) -> int:
        return self.labels.null_class

    def forward(self, y: Tensor) -> Tensor:
        e = self.modality_embed.weight[self.index]
        if isinstance(self.labels, PooledTextEmbedder):  # y is the pooled text vector (B, D)
            return self.labels(y, offset=e)
        return self.labels(y) + e


class JointSiT(nn.Module):
    """Several SiTs sharing one trunk. Build from per-member SiTs of equal trunk shape.

    Args:
        members: name -> SiT (in_channels, num_classes, pos_axes and prediction may differ; the
            trunk -- hidden size, depth, heads, mlp ratio, learn_sigma -- must agree). The first
            member's trunk is kept and the others are tied to it.
    """

    #: members' projections are unused on the other members' steps: DDP needs find_unused_parameters
    has_unused_parameters = True

    def __init__(self, members: Mapping[str, SiT]):
        super().__init__()
        if not members:
            raise ValueError("a joint model needs at least one member")
        names = list(members)
        first = members[names[0]]
        trunk = ("hidden_size", "depth", "num_heads", "mlp_ratio", "learn_sigma")
        for name, sit in members.items():
            diff = [k for k in trunk if getattr(sit, k) != getattr(first, k)]
            if diff:
                raise ValueError(f"member {name!r} differs from {names[0]!r} in the shared trunk ({diff})")
        texts = {name: isinstance(sit, TextSiT) for name, sit in members.items()}
        if len(set(texts.values())) > 1:
            raise ValueError(f"members mix text and label conditioning ({texts}); all or none must be TextSiT")
        self.is_text = texts[names[0]]
        if self.is_text:
            ref = first.arch_config()["text"]
            for name, sit in members.items():
                diff = sorted(k for k, v in sit.arch_config()["text"].items() if ref[k] != v)
                if diff:
                    raise ValueError(f"member {name!r} differs from {names[0]!r} in the shared text settings {diff}; "
                                     "build every member with one caption encoder (app.joint.build_joint)")
        self.names = names
        self.hidden_size, self.depth = first.hidden_size, first.depth
        self.t_embedder = first.t_embedder
        self.blocks = first.blocks
        self.final_adaLN = first.final_layer.adaLN_modulation
        self.modality_embed = nn.Embedding(len(names), first.hidden_size)
        nn.init.normal_(self.modality_embed.weight, std=0.02)  # as the label table (DiT's init)
        self.x_embedders = nn.ModuleDict({n: m.x_embedder for n, m in members.items()})
        self.label_embedders = nn.ModuleDict({n: m.y_embedder for n, m in members.items()})
        self.out_projs = nn.ModuleDict({n: m.final_layer.linear for n, m in members.items()})
        if self.is_text:  # one text encoder and pooled-text MLP for every member (the blocks hold the stream)
            self.text_encoder, self.pooled_mlp = first.text_encoder, first.pooled_mlp
        views = {}
        for i, (name, sit) in enumerate(members.items()):
            sit.t_embedder, sit.blocks = self.t_embedder, self.blocks
            if self.is_text:
                sit.text_encoder, sit.pooled_mlp = self.text_encoder, self.pooled_mlp
            sit.final_layer.adaLN_modulation = self.final_adaLN
            sit.y_embedder = ModalityLabelEmbedder(self.label_embedders[name], self.modality_embed, i)
            views[name] = sit
        self._views = views  # a plain dict: not submodules, so no weight is saved twice

    # ------------------------------------------------------------------ members

    def view(self, name: str) -> SiT:
        """Member ``name`` as a SiT sharing this model's weights."""
        if name not in self._views:
            raise KeyError(f"modality {name!r} is not a member of this joint model (members: {self.names})")
        return self._views[name]

    def member(self, name: str) -> "MemberModel":
        self.view(name)
        return MemberModel(self, name)

    def train(self, mode: bool = True):
        super().train(mode)
        for sit in self._views.values():  # grad checkpointing reads the view's own flag
            sit.training = mode
        return self

    def arch_config(self) -> dict:
        return {"joint": True, "members": {n: self._views[n].arch_config() for n in self.names}}

    # ------------------------------------------------------------------ forward

    def forward(self, *args, modality: str, **kwargs):
        """Member ``modality``'s SiT forward (same arguments and returns as :meth:`SiT.forward`)."""
        return self.view(modality)(*args, **kwargs)

    def forward_features(self, *args, modality: str, **kwargs):
        return self.view(modality).forward_features(*args, **kwargs)


class MemberModel:
    """A callable stand-in for member ``name``'s SiT that calls through the joint model.

    ``model(x, t, y, coords, ...)`` is ``joint(x, t, y, coords, ..., modality=name)``; every other
    attribute (``null_class``, ``num_classes``, ``in_channels``, ``prediction``...) is the member's.
    """

    def __init__(self, joint: JointSiT, name: str):
        self.joint, self.name = joint, name

    def __call__(self, *args, **kwargs):
        return self.joint(*args, modality=self.name, **kwargs)

    def forward_features(self, *args, **kwargs):
        return self.joint.forward_features(*args, modality=self.name, **kwargs)

    def __getattr__(self, key):
        if key in ("joint", "name"):  # not set yet (copy / pickle): no recursion
            raise AttributeError(key)
        return getattr(self.joint.view(self.name), key)


def export_member(joint_state: Mapping[str, Tensor], arch: Mapping, name: str) -> tuple[dict, dict]:
    """``(SiT state dict, SiT arch_config)`` of member ``name`` from a joint state dict.

    The result loads into a plain single-modality :class:`SiT` (a :class:`TextSiT` for a text
    model: ``arch`` then holds ``text``) and gives exactly the member's velocity: the modality embedding is folded into the member's label table (it is added to every
    label row, the null row included).
    """
    members = arch.get("members") or {}
    if name not in members:
        raise KeyError(f"modality {name!r} is not in this joint checkpoint (members: {sorted(members)})")
    index = list(members).index(name)
    out = {}
    for key, value in joint_state.items():
        if key.startswith(("t_embedder.", "blocks.", "text_encoder.", "pooled_mlp.")):  # text: shared, kept
            out[key] = value
        elif key.startswith("final_adaLN."):
            out["final_layer.adaLN_modulation." + key[len("final_adaLN."):]] = value
        elif key.startswith(f"x_embedders.{name}."):
            out["x_embedder." + key[len(f"x_embedders.{name}."):]] = value
        elif key.startswith(f"out_projs.{name}."):
            out["final_layer.linear." + key[len(f"out_projs.{name}."):]] = value
        elif key.startswith(f"label_embedders.{name}."):
            out["y_embedder." + key[len(f"label_embedders.{name}."):]] = value
    table = "y_embedder.embedding_table.weight"
    out[table] = out[table] + joint_state["modality_embed.weight"][index]
    return out, dict(members[name])


def build_member_sit(state: Mapping[str, Tensor], arch: Mapping) -> SiT:
    """A SiT (TextSiT) from :func:`export_member`'s pair (tests, the single-modality sampler)."""
    model = TextSiT.from_arch_config(dict(arch)) if "text" in arch else SiT(**arch)
    model.load_state_dict(state)
    return model.eval()


def is_joint_state(obj: Mapping) -> bool:
    cfg = obj.get("model_config") if isinstance(obj, Mapping) else None
    return isinstance(cfg, Mapping) and bool(cfg.get("joint"))


__all__ = ["JointSiT", "MemberModel", "ModalityLabelEmbedder", "export_member", "build_member_sit", "is_joint_state"]
