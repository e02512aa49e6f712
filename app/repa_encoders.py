"""Frozen REPA encoders built from the evaluators' offline networks (no download, no hub call).

Interface (as ``core.encoders``): ``encoder(tokens (B, N, C), raw) -> (B, N, feature_dim)`` plus a
``feature_dim`` attribute. ``raw`` is the clean batch the tokenizer encoded: images (B, 3, H, W) and
video (B, T, 3, H, W) in [-1, 1], audio waveforms (B, samples). Spatial features are pooled to the
model's token grid so that every model token gets the feature of the region it covers.

* :class:`InceptionTokenEncoder` -- the TF-2015 Inception of ``fid`` (evals/inception.py), features
  of one of its mixed blocks (default ``mixed_7``: 768 channels, 17x17 at 299 px, the width of
  DINOv2-B). **It is the network ``fid`` / ``fid_frame`` measure with**, so REPA with it is
  optimised towards the metric's own feature space; the suite report says so.
* :class:`CrepeTokenEncoder` -- CREPE (evals/audio_nets.py) frame embeddings resampled to the
  mel token grid's time axis and shared by every mel-band group of a frame group.
* :class:`DINOv2TokenEncoder` -- DINOv2 patch tokens (evals/dinov2.py), REPA's own encoder and
  the paper's baseline (Table 1: "REPA (DINOv2-B)"); needs the ``dinov2`` weight file.
* :func:`offline_encoder` -- the per-modality default: ``backbone=auto`` means DINOv2 for image /
  video when its weight file is present, else the Inception, and CREPE for audio. Used by
  ``configs/method/repa_offline.yaml`` with ``modality: ${modality.eval_family}``, so one hydra sweep over
  modalities picks the right network for each.

The networks are registered as submodules (so ``.to(device)`` moves them), but the REPA objective
excludes ``encoder.*`` from its trainable state, so checkpoints stay small.
"""

from __future__ import annotations

import hashlib
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

INCEPTION_LAYERS = {  # block -> channels (spatial size at 299 px)
    "mixed_2": 288,   # 35x35
    "mixed_7": 768,   # 17x17
    "mixed_10": 2048,  # 8x8, the pool3 map FID averages
}


class FeatureCache:
    """Per-item feature memo keyed by the item's bytes (the frozen encoder is deterministic).

    Small synthetic datasets are revisited hundreds of times in a CPU run; recomputing a 299 px
    Inception pass per visit would make REPA several times slower than fm/selfflow for no
    information. ``max_items=0`` disables it (data augmentation makes every item new anyway).
    """

    def __init__(self, max_items: int):
        self.max_items, self.store, self.hits, self.misses = int(max_items), {}, 0, 0

    def __call__(self, tokens: Tensor, raw: Tensor, compute) -> Tensor:
        if self.max_items <= 0:
            return compute(tokens, raw)
        keys = [hashlib.blake2b(r.detach().cpu().numpy().tobytes(), digest_size=16).digest() for r in raw]
        todo = [i for i, k in enumerate(keys) if k not in self.store]
        self.hits += len(keys) - len(todo)
        self.misses += len(todo)
        if todo:
            idx = torch.tensor(todo, device=raw.device)
            fresh = compute(tokens.index_select(0, idx), raw.index_select(0, idx))
            for j, i in enumerate(todo):
                if len(self.store) < self.max_items:
                    self.store[keys[i]] = fresh[j].cpu()
            if len(todo) == len(keys):
                return fresh
            out = [None] * len(keys)
            for j, i in enumerate(todo):
                out[i] = fresh[j]
        else:
            out = [None] * len(keys)
        return torch.stack([o if o is not None else self.store[k].to(tokens.device) for o, k in zip(out, keys)])


def image_grid(n_tokens: int, height: int, width: int, key: str) -> tuple[int, int]:
    """(rows, cols) of a raster token grid with the image's aspect ratio; error names ``key``."""
    rows = round(math.sqrt(n_tokens * height / width))
    cols = n_tokens // max(rows, 1)
    if rows * cols != n_tokens:
        raise ValueError(f"cannot lay {n_tokens} tokens on a {height}x{width} image as a raster grid; "
                         f"set {key} explicitly")
    return rows, cols


def maps_to_tokens(features, tokens: Tensor, raw: Tensor, patch, dim: int, who: str) -> Tensor:
    """Per-token features from an image network's spatial map.

    features: images in [-1, 1] (M, 3, H, W) -> (M, dim, h, w). Images: the map is average-pooled
    to the model's token grid (raster order). Video (B, T, 3, H, W): every frame is encoded, pooled
    to the tubelet grid and the ``pt`` frames of a tubelet averaged ((t h w) order, as the tokenizer).
    """
    B, N = tokens.shape[:2]
    if raw.dim() in (4, 5) and raw.shape[-3] != 3:
        raise ValueError(f"{who} needs RGB pixels in [-1, 1], got raw {tuple(raw.shape)} (latents?); with "
                         "modality=image_latent set modality.tokenizer.input=image and train on an image "
                         "folder so REPA sees the pixels the latents come from")
    if raw.dim() == 4:  # images
        rows, cols = image_grid(N, raw.shape[-2], raw.shape[-1], "model.patch_size")
        f = F.adaptive_avg_pool2d(features(raw), (rows, cols))  # (B, C, rows, cols)
        return f.flatten(2).transpose(1, 2).contiguous()  # raster (h w) order, as the tokenizers
    if raw.dim() != 5:
        raise ValueError(f"{who} expects images (B,3,H,W) or video (B,T,3,H,W), got {tuple(raw.shape)}")
    T, H, W = raw.shape[1], raw.shape[3], raw.shape[4]
    if patch is None:
        raise ValueError(f"video REPA with {who} needs the tubelet size: set "
                         "method.encoder.patch=${modality.tokenizer.patch}")
    pt, ph, pw = patch
    grid = (T // pt, H // ph, W // pw)
    if grid[0] * grid[1] * grid[2] != N:
        raise ValueError(f"method.encoder.patch={list(patch)} gives a {grid} grid for {N} tokens; "
                         "it must equal modality.tokenizer.patch")
    f = features(raw.flatten(0, 1))  # (B*T, C, h, w)
    f = F.adaptive_avg_pool2d(f, grid[1:]).view(B, grid[0], pt, dim, *grid[1:]).mean(2)
    return f.permute(0, 1, 3, 4, 2).reshape(B, N, dim).contiguous()  # (t h w) order


class SpatialTokenEncoder(nn.Module):
    """Base of the image-network encoders: a subclass sets ``cache``, ``patch`` (video tubelet or
    None) and ``feature_dim`` and implements ``_features(images) -> (M, feature_dim, h, w)``."""

    @torch.no_grad()
    def forward(self, tokens: Tensor, raw: Tensor) -> Tensor:
        if raw is None:
            raise ValueError(f"{type(self).__name__} needs the raw images/frames (raw=None was given)")
        return self.cache(tokens, raw, self._encode)

    def _encode(self, tokens: Tensor, raw: Tensor) -> Tensor:
        return maps_to_tokens(self._features, tokens, raw, self.patch, self.feature_dim, type(self).__name__)


class InceptionTokenEncoder(SpatialTokenEncoder):
    """TF-2015 Inception features of images or video frames, one per model token.

    input_size: the resize before the network. 299 is the metric's own; smaller values (>= 75)
    cost ``(input_size / 299)^2`` as much, which is what makes REPA runnable on a CPU budget.
    patch: video only, the tokenizer's (pt, ph, pw); token features average the pt frames of a tubelet.
    """

    def __init__(self, in_dim: int, layer: str = "mixed_7", input_size: int = 299, patch=None,
                 weights_path=None, cache_items: int = 0):
        super().__init__()
        self.cache = FeatureCache(cache_items)
        from evals.inception import load_inception  # lazy: verifies the weight file (weights manager)

        if layer not in INCEPTION_LAYERS:
            raise ValueError(f"method.encoder.layer={layer!r}: must be one of {sorted(INCEPTION_LAYERS)}")
        if input_size < 75:
            raise ValueError(f"method.encoder.input_size={input_size}: Inception needs >= 75 px")
        net, self.weights_sha256 = load_inception(weights_path)
        # A private copy: the evaluator's cached instance may live on another device.
        self.net = type(net)()
        self.net.load_state_dict(net.state_dict())
        for m in self.net.modules():  # fold the frozen batch norms into the convs where supported (faster)
            if hasattr(m, "fuse"):
                m.fuse()
        self.net.requires_grad_(False).eval()
        self.layer, self.input_size = layer, int(input_size)
        self.patch = tuple(patch) if patch is not None else None
        self.feature_dim = INCEPTION_LAYERS[layer]
        self.name = f"inception_tf2015:{layer}@{input_size}px"

    def _features(self, images: Tensor) -> Tensor:
        """images in [-1, 1] (M, 3, H, W) -> (M, C, h, w) block output, ADM's input mapping."""
        from evals.inception import resize_bilinear_tf1

        n = self.net
        x = resize_bilinear_tf1((images.float() + 1.0) * 127.5, self.input_size)
        x = (x - 128.0) / 128.0
        x = F.max_pool2d(n.conv_2(n.conv_1(n.conv(x))), 3, 2)
        x = F.max_pool2d(n.conv_4(n.conv_3(x)), 3, 2)
        x = n.mixed_2(n.mixed_1(n.mixed(x)))
        if self.layer != "mixed_2":
            x = n.mixed_7(n.mixed_6(n.mixed_5(n.mixed_4(n.mixed_3(x)))))
            n.mixed_6.last_conv = None  # drop the sFID side output (memory)
        if self.layer == "mixed_10":
            x = n.mixed_10(n.mixed_9(n.mixed_8(x)))
        return x


class DINOv2TokenEncoder(SpatialTokenEncoder):
    """DINOv2 patch tokens (``x_norm_patchtokens``) per model token: REPA's own encoder.

    Preprocessing is REPA's: ImageNet mean/std, bicubic resize to ``input_size`` (224 for 256 px
    images, i.e. a 16x16 DINOv2 grid for SiT/2's 16x16 tokens), the position table resampled once
    to that grid. When the model's token grid differs from DINOv2's, the patch-token map is
    average-pooled to it (a finer model grid repeats DINOv2 features: raise ``input_size`` instead).
    """

    def __init__(self, in_dim: int, input_size: int = 224, patch=None, weights_path=None,
                 cache_items: int = 0, pos_resample: str = "repa"):
        super().__init__()
        from evals.dinov2 import load_dinov2

        self.cache = FeatureCache(cache_items)
        self.net, self.weights_sha256 = load_dinov2(weights_path, pos_resample)
        if input_size % self.net.patch:
            raise ValueError(f"method.encoder.input_size={input_size}: must be a multiple of DINOv2's "
                             f"patch size {self.net.patch} (REPA uses 224)")
        self.input_size, self.feature_dim = int(input_size), self.net.dim
        self.patch = tuple(patch) if patch is not None else None
        self.name = f"dinov2_d{self.net.dim}_l{len(self.net.blocks)}@{input_size}px"

    def _features(self, images: Tensor) -> Tensor:
        from evals.dinov2 import preprocess

        g = self.input_size // self.net.patch
        t = self.net(preprocess(images, self.input_size))  # (M, g*g, D)
        return t.transpose(1, 2).reshape(t.shape[0], self.feature_dim, g, g)


class CrepeTokenEncoder(nn.Module):
    """CREPE frame embeddings (256 for tiny, 2048 for full) per mel token.

    Mel tokens are ordered (band group, frame group); CREPE has no frequency axis, so every band
    group of one frame group gets that time span's embedding. freq_groups = n_mels // patch[0].
    """

    def __init__(self, in_dim: int, n_mels: int = 64, patch=(8, 8), capacity: str = "tiny",
                 sample_rate: int = 16000, weights_path=None, cache_items: int = 0):
        super().__init__()
        self.cache = FeatureCache(cache_items)
        from evals.audio_nets import CREPE_SR, load_crepe

        sd, self.weights_sha256 = load_crepe(capacity, weights_path)
        for k, v in sd.items():  # buffers: moved by .to(), excluded from gradients
            self.register_buffer("w_" + k.replace(".", "__"), v.float(), persistent=False)
        self._keys = list(sd)
        self.freq_groups = int(n_mels) // int(patch[0])
        self.sample_rate, self.crepe_sr = int(sample_rate), CREPE_SR
        self.feature_dim = 256 if capacity == "tiny" else 2048
        self.name = f"crepe_{capacity}"

    @torch.no_grad()
    def forward(self, tokens: Tensor, raw: Tensor) -> Tensor:
        if raw is None or raw.dim() != 2:
            raise ValueError(f"CrepeTokenEncoder expects waveforms (B, samples), got {None if raw is None else tuple(raw.shape)}")
        return self.cache(tokens, raw, self._encode)

    def _encode(self, tokens: Tensor, raw: Tensor) -> Tensor:
        from evals.audio_nets import crepe_embed

        B, N = tokens.shape[:2]
        if N % self.freq_groups:
            raise ValueError(f"{N} mel tokens are not a multiple of {self.freq_groups} band groups; set "
                             "method.encoder.n_mels / patch to the tokenizer's (a learned mel latent is not supported)")
        time_groups = N // self.freq_groups
        x = raw.float()
        if self.sample_rate != self.crepe_sr:
            import torchaudio.functional as AF

            x = AF.resample(x, self.sample_rate, self.crepe_sr)
        sd = {k: getattr(self, "w_" + k.replace(".", "__")).cpu() for k in self._keys}
        hop = max(1, x.shape[1] // time_groups)
        feats = [torch.from_numpy(crepe_embed(sd, clip.cpu().numpy(), hop=hop)).float() for clip in x]
        f = torch.stack([F.interpolate(e.T[None], size=time_groups, mode="linear", align_corners=False)[0]
                         for e in feats])  # (B, D, time_groups)
        f = f.to(tokens.device).transpose(1, 2)  # (B, time_groups, D)
        return f[:, None].expand(B, self.freq_groups, time_groups, self.feature_dim).reshape(B, N, -1).contiguous()


def choose_backbone(modality: str, backbone: str = "auto", weights_path=None, **_) -> str:
    """The network ``offline_encoder`` builds for ``modality`` (``auto`` resolved); a clear error
    names the config key when the pair makes no sense. Loads nothing (cheap to validate configs)."""
    if backbone not in ("auto", "inception", "crepe", "dinov2"):
        raise ValueError(f"method.encoder.backbone={backbone!r}: must be auto, dinov2, inception or crepe")
    if modality == "audio":
        if backbone not in ("auto", "crepe"):
            raise ValueError(f"method.encoder.backbone={backbone} is an image network; modality audio needs "
                             "crepe (or auto)")
        return "crepe"
    if modality not in ("image", "video"):
        raise ValueError(f"method.encoder: no REPA encoder for modality {modality!r}")
    if backbone == "crepe":
        raise ValueError(f"method.encoder.backbone=crepe is an audio network; modality {modality} needs "
                         "dinov2, inception or auto")
    if backbone == "auto":
        if weights_path:
            raise ValueError("method.encoder.weights_path is set but backbone=auto: name the network the "
                             "file belongs to (method.encoder.backbone=dinov2 or inception)")
        from evals.weights import available

        backbone = "dinov2" if available("dinov2") else "inception"
    return backbone


def offline_encoder(in_dim: int, modality: str, backbone: str = "auto", **kw) -> nn.Module:
    """The suite's default REPA encoder for ``modality`` (see the module docstring).

    Keyword arguments not used by the chosen network are dropped, so one config node serves
    every modality: image/video take layer (Inception), input_size, pos_resample (DINOv2),
    patch (video); audio takes n_mels, patch, capacity, sample_rate.
    """
    backbone = choose_backbone(modality, backbone, kw.get("weights_path"))

    def pick(*names):
        return {k: kw[k] for k in names if kw.get(k) is not None}

    if backbone == "crepe":
        keep = pick("n_mels", "capacity", "sample_rate", "weights_path", "cache_items")
        if kw.get("audio_patch") is not None:
            keep["patch"] = kw["audio_patch"]
        return CrepeTokenEncoder(in_dim, **keep)
    video = {"patch": kw.get("video_patch")} if modality == "video" else {}
    if backbone == "dinov2":
        return DINOv2TokenEncoder(in_dim, **pick("input_size", "weights_path", "cache_items", "pos_resample"), **video)
    return InceptionTokenEncoder(in_dim, **pick("layer", "input_size", "weights_path", "cache_items"), **video)


def encoder_record(encoder) -> dict:
    """What a run's ``encoder.json`` says of the network REPA really used ("auto" picks at run time)."""
    return {"class": type(encoder).__name__, "name": getattr(encoder, "name", type(encoder).__name__),
            "feature_dim": encoder.feature_dim, "weights_sha256": getattr(encoder, "weights_sha256", None)}
