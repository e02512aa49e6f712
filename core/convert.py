"""Checkpoint converters: published SiT-family weights -> our :class:`~core.transformer.SiT` in the paper convention.

Supported layouts (key names and shapes were read from the public repositories; no code is copied):

``selfflow``  black-forest-labs/Self-Flow ``src/model.py`` (``SelfFlowPerTokenDiT``, ``selfflow_imagenet256.pt``)
    * ``x_embedder.proj`` is a Linear on tokens flattened as ``(c, p1, p2)`` -- our token order.
    * ``pos_embed (1, N, D)`` fixed 2-D sin-cos; ``t_embedder.mlp.{0,2}``; ``y_embedder.embedding_table``
      with 1001 rows (the model is built with ``num_classes=1001`` and no dropout row; 1000 is null).
    * blocks ``blocks.i.{attn.qkv, attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation.1}`` (per-token adaLN,
      same weights as a plain DiT block); ``final_layer.{linear, adaLN_modulation.1}``, the linear emitting
      ``p*p*8`` values per token in ``(p, q, c)`` order (``learn_sigma``: only channels 0..3 are used).
    * ``projector.linear{1,2}``: the self-distillation head (D -> 2D -> D).
    * Public ``forward(x, t)`` feeds ``1 - t`` to the timestep embedder and returns the *negated*,
      reordered output: the raw network is a SiT-convention model (t = 1 data, output data - noise).
``sit``       willisma/SiT ``models.py``: the same raw network (t = 1 data, velocity data - noise), with a
    ``Conv2d`` patch embedding ``x_embedder.proj.weight (D, C, p, p)`` and ``unpatchify`` reading the final
    linear as ``(p, q, c)``; ``learn_sigma=True`` for the 256 px release (8 output channels).
``repa``      sihyun-yu/REPA ``models/sit.py``: ``Conv2d`` patch embedding, ``(p, q, c)`` output, no
    ``learn_sigma``, paper time already (x_t = (1 - t) x + t eps, target eps - x, t embedded unscaled in
    [0, 1]), plus ``projectors.k.{0,2,4}`` (REPA's MLP to the encoder width).
``ours``      a state dict of :class:`SiT` or a checkpoint of our trainer (EMA weights by default).

Why the time flip and sign are folded into the weights instead of wrapping the model: the sinusoidal
features satisfy ``[cos((1-t) f), sin((1-t) f)] = R_f [cos(t f), sin(t f)]`` with the fixed reflection
``R_f = [[cos f, sin f], [sin f, -cos f]]``, so ``emb(1 - t) = W @ phi(1 - t) = (W R) @ phi(t)`` exactly, and
the output negation is ``-(A h + b) = (-A) h + (-b)``. The converted network is therefore a plain :class:`SiT`
that *is* in the paper convention: it saves and reloads as ``ours``, fine-tunes with our objectives,
takes per-token ``t`` through the same deduplicated adaLN path, and costs nothing extra per call.
The fold is computed in float64; the remaining difference to the official forward is float rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import CheckpointError, resolve_checkpoint
from .embeddings import sincos_from_coords
from .transformer import MODEL_SIZES, SiT

LAYOUTS = ("selfflow", "repa", "sit", "ours")
NESTING_KEYS = ("ema", "model", "state_dict")  # tried in this order when a checkpoint is a dict of dicts


@dataclass
class ConvertInfo:
    """What a conversion did. ``heads`` holds kept projector weights in our module layout."""

    layout: str
    path: str | None = None
    nested_under: list[str] = field(default_factory=list)
    stripped_prefix: bool = False
    model_kwargs: dict = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    heads: dict[str, dict[str, Tensor]] = field(default_factory=dict)
    tokenizer_state: dict | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        """JSON-friendly provenance (no tensors)."""
        return {"layout": self.layout, "path": self.path, "nested_under": self.nested_under,
                "model_kwargs": self.model_kwargs, "dropped": self.dropped, "missing": self.missing,
                "unexpected": self.unexpected, "heads": sorted(self.heads), "notes": self.notes}


#################################################################################
#                        Finding the state dict in a file                       #
#################################################################################


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def extract_state_dict(obj, prefer: str | None = None, where: str = "checkpoint") -> tuple[dict[str, Tensor], list[str], dict]:
    """Descend into ``obj`` until a flat ``{name: tensor}`` dict; strip ``module.`` (DDP) prefixes.

    Args:
        obj: a raw state dict or a dict nesting one under ``ema``, ``model`` or ``state_dict`` (also
            several levels, e.g. our trainer's ``{"ema": {"model": sd, "num_updates": n}}``).
        prefer: the nesting key to take first (default order: ema, model, state_dict; EMA weights
            are what the papers evaluate).
    Returns:
        ``(state_dict, path of nesting keys taken, top-level dict)``.
    """
    order = ((prefer,) if prefer else ()) + tuple(k for k in NESTING_KEYS if k != prefer)
    top, path = obj, []
    while not _is_state_dict(obj):
        if not isinstance(obj, dict):
            raise ValueError(f"{where}: expected a state dict (name -> tensor), found {type(obj).__name__}")
        key = next((k for k in order if isinstance(obj.get(k), dict)), None)
        if key is None:
            tensors = {k: v for k, v in obj.items() if isinstance(v, Tensor)}
            if tensors and len(tensors) >= len(obj) // 2:  # a state dict with a few scalars mixed in
                obj = tensors
                break
            raise ValueError(f"{where}: no state dict found; top-level keys are {sorted(map(str, obj))[:20]}. "
                             f"Save the model's state_dict() (optionally under one of {NESTING_KEYS}).")
        path.append(key)
        obj = obj[key]
    stripped = any(k.startswith("module.") for k in obj)
    sd = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    return sd, path + (["module."] if stripped else []), top if isinstance(top, dict) else {}


#################################################################################
#                         Weight transforms (documented above)                  #
#################################################################################


def fold_time_flip(w: Tensor, max_period: float = 10000.0) -> Tensor:
    """``W (D, F) -> W'`` with ``W' phi(t) = W phi(1 - t)`` for our ``[cos | sin]`` frequency features."""
    half = w.shape[1] // 2
    if w.shape[1] % 2:
        raise ValueError(f"t_embedder.mlp.0.weight has {w.shape[1]} inputs; an even frequency size is expected")
    # Same frequencies as the embedder (computed in float32 there, so round them the same way).
    f = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / half).double()
    c, s = torch.cos(f), torch.sin(f)
    w64 = w.double()
    wc, ws = w64[:, :half], w64[:, half:]
    out = torch.cat([wc * c + ws * s, wc * s - ws * c], dim=1)
    return out.to(w.dtype)


def pqc_to_cpq(t: Tensor, patch: int, channels: int) -> Tensor:
    """Reorder the leading dim of a final-layer weight/bias from ``(p, q, c)`` to ``(c, p, q)``."""
    if t.shape[0] != patch * patch * channels:
        raise ValueError(f"final_layer.linear has {t.shape[0]} outputs, expected patch^2 * channels = "
                         f"{patch}^2 * {channels}; pass the right patch_size")
    return t.reshape(patch, patch, channels, *t.shape[1:]).permute(2, 0, 1, *range(3, t.dim() + 2)).reshape(t.shape)


def _dit_pos_table(dim: int, num_tokens: int, axes) -> Tensor:
    grid = math.isqrt(num_tokens)
    if grid * grid != num_tokens:
        raise ValueError(f"pos_embed has {num_tokens} positions; a square token grid is expected")
    h, w = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    coords = torch.stack([torch.zeros_like(h), h, w], dim=-1).reshape(-1, 3)
    return sincos_from_coords(dim, coords, axes).float()


def _check_pos_embed(sd: dict, axes, info: ConvertInfo) -> None:
    """Our positions are computed from coordinates; the stored table must equal them, then it is dropped."""
    pos = sd.pop("pos_embed", None)
    if pos is None:
        info.notes.append("no pos_embed in checkpoint (fixed sin-cos assumed)")
        return
    table = _dit_pos_table(pos.shape[-1], pos.shape[-2], axes)
    err = float((pos.reshape(table.shape).float() - table).abs().max())
    if err > 1e-4:
        raise ValueError(f"pos_embed differs from the fixed 2-D sin-cos table for pos_axes={list(axes)} "
                         f"(max |diff| {err:.3g}); this checkpoint uses other positions. Check model.pos_axes "
                         f"(DiT/SiT order is [width, height]).")
    info.dropped.append("pos_embed")
    info.notes.append(f"pos_embed matches our sin-cos table on a {math.isqrt(pos.shape[-2])}^2 grid (max |diff| {err:.1e})")


def _infer_kwargs(sd: dict, token_dim: int, patch: int, model_kwargs: dict) -> dict:
    """Architecture from tensor shapes; user kwargs must agree (num_heads is not visible in shapes)."""
    if "x_embedder.weight" not in sd:
        raise ValueError("converted state dict lacks x_embedder.weight; is this the right layout?")
    hidden = sd["x_embedder.weight"].shape[0]
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    rows = sd["y_embedder.embedding_table.weight"].shape[0]
    out = sd["final_layer.linear.weight"].shape[0]
    inferred = dict(in_channels=token_dim, hidden_size=hidden, depth=depth,
                    mlp_ratio=sd["blocks.0.mlp.fc1.weight"].shape[0] / hidden if depth else 4.0,
                    num_classes=rows - 1, learn_sigma=out == 2 * token_dim)
    if out not in (token_dim, 2 * token_dim):
        raise ValueError(f"final_layer.linear.weight has {out} outputs for {token_dim}-wide tokens; "
                         f"check patch_size={patch}")
    heads = model_kwargs.get("num_heads")
    if heads is None:
        heads = next((h for (d, n, h) in MODEL_SIZES.values() if (d, n) == (hidden, depth)), None)
        if heads is None:
            raise ValueError(f"cannot infer num_heads for hidden_size={hidden}, depth={depth}: pass num_heads "
                             f"(model.num_heads)")
    inferred["num_heads"] = heads
    for key, value in model_kwargs.items():
        if key in inferred and key != "num_heads" and value is not None and value != inferred[key]:
            raise ValueError(f"model.{key}={value!r} but the checkpoint has {key}={inferred[key]!r}; drop the "
                             f"override or pick the matching model config")
    rest = {k: v for k, v in model_kwargs.items() if k not in inferred and k != "patch_size"}
    return {**inferred, **rest}


def _patch_embed(sd: dict, conv: bool) -> int:
    """Map ``x_embedder.proj`` to our Linear; returns the token width."""
    w = sd.pop("x_embedder.proj.weight")
    if conv:  # Conv2d (D, C, p, q): flattening gives (c, p, q), our token order
        if w.dim() != 4:
            raise ValueError(f"x_embedder.proj.weight has shape {tuple(w.shape)}; a Conv2d (D, C, p, p) is expected "
                             f"for this layout (Self-Flow checkpoints use layout=selfflow)")
        w = w.reshape(w.shape[0], -1)
    elif w.dim() != 2:
        raise ValueError(f"x_embedder.proj.weight has shape {tuple(w.shape)}; a Linear (D, C*p*p) is expected for "
                         f"layout=selfflow (conv checkpoints use layout=sit or repa)")
    sd["x_embedder.weight"] = w
    sd["x_embedder.bias"] = sd.pop("x_embedder.proj.bias")
    return w.shape[1]


def _final_layer(sd: dict, patch: int, token_dim: int) -> None:
    channels = sd["final_layer.linear.weight"].shape[0] // (patch * patch)
    for name in ("final_layer.linear.weight", "final_layer.linear.bias"):
        sd[name] = pqc_to_cpq(sd[name], patch, channels)


def _take_heads(sd: dict, layout: str, keep: bool, info: ConvertInfo) -> None:
    if layout == "selfflow":
        names = {"projector.linear1.": "0.", "projector.linear2.": "2."}  # -> SelfFlowObjective.head
        head = {names[p] + k[len(p):]: v for k, v in sd.items() for p in names if k.startswith(p)}
        keys = [k for k in sd if k.startswith("projector.")]
        target = "selfflow_head"
    else:  # repa: projectors.<k>.<0|2|4>.* -> REPAObjective.projector (one encoder: k = 0)
        keys = [k for k in sd if k.startswith("projectors.")]
        head = {k[len("projectors.0."):]: sd[k] for k in keys if k.startswith("projectors.0.")}
        target = "repa_projector"
        if any(not k.startswith("projectors.0.") for k in keys):
            info.notes.append("several REPA projectors present; only projectors.0 is kept")
    for k in keys:
        sd.pop(k)
    if keep and head:
        info.heads[target] = head
    elif keys:
        info.dropped.extend(keys)


def _renumber_legacy_repa(sd: dict, info: ConvertInfo) -> None:
    """Early REPA checkpoints split blocks into ``blocks.*`` (encoder) and ``decoder_blocks.*``; REPA's
    ``--legacy`` loader renumbers ``decoder_blocks.i`` to ``blocks.(i + encoder_depth)``."""
    encoder_depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    for key in [k for k in sd if k.startswith("decoder_blocks.")]:
        _, idx, rest = key.split(".", 2)
        sd[f"blocks.{int(idx) + encoder_depth}.{rest}"] = sd.pop(key)
    info.notes.append(f"legacy REPA decoder_blocks.* renumbered after {encoder_depth} encoder blocks")


def convert_state_dict(sd: dict[str, Tensor], layout: str, patch_size: int = 2, pos_axes=("width", "height"),
                       keep_projector: bool = False, info: ConvertInfo | None = None) -> tuple[dict[str, Tensor], ConvertInfo]:
    """Map a foreign state dict to our key names, token order and time convention (see module doc)."""
    if layout not in LAYOUTS:
        raise ValueError(f"checkpoint.layout={layout!r}: must be one of {LAYOUTS}")
    info = info or ConvertInfo(layout=layout)
    sd = dict(sd)
    if layout == "ours":
        return sd, info
    if "x_embedder.proj.weight" not in sd:
        raise ValueError(f"layout={layout}: no x_embedder.proj.weight in the checkpoint (keys start "
                         f"{sorted(sd)[:5]}); pick the layout that wrote it ({LAYOUTS})")
    if layout == "repa" and any(k.startswith("decoder_blocks.") for k in sd):
        _renumber_legacy_repa(sd, info)
    _patch_embed(sd, conv=layout in ("sit", "repa"))
    _check_pos_embed(sd, pos_axes, info)
    _take_heads(sd, layout, keep_projector, info)
    _final_layer(sd, patch_size, sd["x_embedder.weight"].shape[1])
    if layout in ("selfflow", "sit"):  # SiT-convention raw network: fold t -> 1 - t and the sign
        sd["t_embedder.mlp.0.weight"] = fold_time_flip(sd["t_embedder.mlp.0.weight"])
        sd["final_layer.linear.weight"] = -sd["final_layer.linear.weight"]
        sd["final_layer.linear.bias"] = -sd["final_layer.linear.bias"]
        info.notes.append("time flip 1 - t folded into t_embedder.mlp.0.weight; output sign folded into final_layer.linear")
    return sd, info


def build_model(sd: dict[str, Tensor], patch_size: int = 2, strict: bool = True, info: ConvertInfo | None = None,
                **model_kwargs) -> SiT:
    """Instantiate :class:`SiT` with the shapes of ``sd`` and load it, reporting missing/unexpected keys by name."""
    info = info or ConvertInfo(layout="ours")
    token_dim = sd["x_embedder.weight"].shape[1] if "x_embedder.weight" in sd else model_kwargs.get("in_channels")
    if token_dim is None:
        raise ValueError("state dict lacks x_embedder.weight; cannot tell the token width")
    kwargs = _infer_kwargs(sd, token_dim, patch_size, model_kwargs)
    model = SiT(**kwargs)
    result = model.load_state_dict(sd, strict=False)
    info.missing, info.unexpected = list(result.missing_keys), list(result.unexpected_keys)
    info.model_kwargs = {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()}
    if strict and (info.missing or info.unexpected):
        raise ValueError(f"{info.path or 'checkpoint'} (layout={info.layout}) does not match SiT{tuple(kwargs.items())}: "
                         f"missing keys {info.missing}; unexpected keys {info.unexpected}. Check checkpoint.layout, "
                         f"or load with strict=False to inspect.")
    return model


# Constructor arguments that the weight shapes do not reveal; our checkpoints store them.
STORED_ONLY_KWARGS = ("num_heads", "pos_axes", "prediction", "t_min")


def restore_model_config(stored: dict, requested: dict, info: ConvertInfo) -> dict:
    """Merge a checkpoint's stored :meth:`SiT.arch_config` with the caller's keyword arguments.

    The stored values of :data:`STORED_ONLY_KWARGS` win: they are what the weights were trained
    with. A caller value that disagrees (typically the sampling config's defaults) is replaced,
    and the replacement is recorded in ``info.notes``. Shape-bearing arguments are still checked
    against the tensors by :func:`build_model`.
    """
    merged = dict(requested)
    for key in STORED_ONLY_KWARGS:
        if key not in stored:
            continue
        value = stored[key]
        asked = requested.get(key)
        if asked is not None and asked != "auto" and _plain(asked) != _plain(value):
            info.notes.append(f"{key}: the checkpoint's {value!r} replaces the requested {asked!r}")
        merged[key] = tuple(value) if key == "pos_axes" else value
    return merged


def _plain(value):
    return list(value) if isinstance(value, (list, tuple)) else value


def load_pretrained(path: str | Path, layout: str = "ours", prefer: str | None = None, strict: bool = True,
                    keep_projector: bool = False, patch_size: int = 2, pos_axes=("width", "height"),
                    map_location="cpu", **model_kwargs) -> tuple[SiT, ConvertInfo]:
    """Load a published or our own checkpoint as a paper-convention :class:`SiT` in eval mode.

    Args:
        path: a ``.pt`` file (or for ``ours`` a run/checkpoints directory with a ``latest`` pointer).
        layout: one of ``selfflow | repa | sit | ours``.
        prefer: nesting key to take first (``ema`` by default; ``model`` for the raw weights).
        strict: raise when keys are missing or unexpected after conversion (names are listed).
        keep_projector: return the projector/head weights in ``info.heads`` instead of dropping them.
        patch_size: latent patch side (2 for SiT-XL/2); needed for the output reorder.
        model_kwargs: ``num_heads`` (inferred for the standard sizes), ``pos_axes`` and any :class:`SiT` argument;
            shape-bearing ones must agree with the checkpoint.
    Returns:
        ``(model, info)``; the model's velocity equals the public forward of the original code, in paper time.
    """
    path = resolve_checkpoint(path)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        raise CheckpointError(path, exc) from exc
    info = ConvertInfo(layout=layout, path=str(path))
    sd, nesting, top = extract_state_dict(obj, prefer, where=str(path))
    info.stripped_prefix = "module." in nesting
    info.nested_under = [k for k in nesting if k != "module."]
    if layout == "ours" and isinstance(top.get("tokenizer"), dict):
        info.tokenizer_state = top["tokenizer"]
    model_kwargs = {**model_kwargs, "pos_axes": tuple(pos_axes)}
    if layout == "ours" and isinstance(top.get("model_config"), dict):
        model_kwargs = restore_model_config(top["model_config"], model_kwargs, info)
    pos_axes = model_kwargs.pop("pos_axes")
    sd, info = convert_state_dict(sd, layout, patch_size, tuple(pos_axes), keep_projector, info)
    model = build_model(sd, patch_size=patch_size, strict=strict, info=info, pos_axes=tuple(pos_axes), **model_kwargs)
    return model.eval(), info
