"""CLIP score: how well samples match their prompts, by a CLIP model read from a local directory.

Convention of torchmetrics' ``CLIPScore`` (and of Hessel et al., 2021, without their 2.5 weight):
per sample ``max(100 * cos(E_image, E_text), 0)``, where ``E_*`` are the projected embeddings of
``CLIPModel.get_image_features`` / ``get_text_features``; the metric is the mean over samples.

* Images ``(N, 3, H, W)`` in [-1, 1]: to [0, 1], resized so the short side is the model's
  ``vision_config.image_size`` (bicubic, antialiased, in torch; no 8-bit rounding), centre-cropped
  to a square of that size, normalised with the directory's ``preprocessor_config.json``
  ``image_mean`` / ``image_std`` (CLIP's own values when absent) -- the steps of CLIP's processor.
* Video ``(N, T, 3, H, W)``: every frame is scored against the clip's prompt (clipped at 0 per
  frame); a clip's score is the mean over its frames.
* Audio: not applicable (a CLAP score would be the analogue; not offered).
* Text: the model's tokenizer, cut at ``text_config.max_position_embeddings`` tokens.

Nothing is downloaded (``local_files_only``). ``transformers`` is the ``text`` extra.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # CLIP's processor defaults (OpenAI's training statistics)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
KEY = "eval.clip_path"
NOTE = ("mean over samples of max(100 * cos(CLIP image embedding, CLIP text embedding of its prompt), 0) "
        "(torchmetrics' CLIPScore convention); video: mean over frames; real_value: held-out real items "
        "against their own captions")


def check_clip_dir(path) -> Path:
    """The directory if it holds a full CLIP model (both towers), else FileNotFoundError / ValueError
    naming the missing file and the key to set."""
    from core.text.pretrained import TOKENIZER_FILES, WEIGHT_FILES  # noqa: PLC0415

    if not path:
        raise FileNotFoundError(f"no CLIP model: set {KEY}=<local directory of a CLIPModel (config.json, "
                                f"model.safetensors, tokenizer files)> or SELFFLOW_WEIGHTS_CLIP; nothing is downloaded")
    root = Path(str(path)).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"CLIP directory {root} does not exist ({KEY})")
    for label, names in (("config", ("config.json",)), ("weights", WEIGHT_FILES), ("tokenizer", TOKENIZER_FILES)):
        if not any((root / n).is_file() for n in names):
            raise FileNotFoundError(f"CLIP {label} file {root / names[0]} is missing ({KEY})")
    kind = json.loads((root / "config.json").read_text()).get("model_type")
    if kind != "clip":
        raise ValueError(f"{root / 'config.json'}: model_type {kind!r}, the CLIP score needs a full CLIP model "
                         f"(model_type 'clip', text and vision towers) ({KEY})")
    return root


def _features(out) -> Tensor:
    """transformers 5 returns a model output whose ``pooler_output`` is the projection; 4 a tensor."""
    return out.pooler_output if hasattr(out, "pooler_output") else out


class ClipScorer:
    """A frozen ``CLIPModel`` from ``path``: ``scores(images, captions) -> (N,)`` CLIP scores."""

    def __init__(self, path, device: str = "cpu"):
        self.root = check_clip_dir(path)
        try:
            import transformers  # noqa: PLC0415 -- optional extra
        except ImportError:
            raise ImportError('the CLIP score needs transformers: pip install -e ".[text]"') from None
        from core.io_utils import cache_dir  # noqa: PLC0415
        from core.text.pretrained import _dir_digest, quiet_transformers  # noqa: PLC0415

        # provenance: SHA-256 over the directory's file hashes (memoised like the text encoders')
        self.key = _dir_digest(self.root, cache_dir("text_features") / "file_digests.json")

        with quiet_transformers(transformers):
            self.model = transformers.CLIPModel.from_pretrained(str(self.root), local_files_only=True)
        self.model = self.model.to(device).eval().requires_grad_(False)
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.root), local_files_only=True)
        self.device = device
        self.image_size = int(self.model.config.vision_config.image_size)
        self.max_tokens = int(self.model.config.text_config.max_position_embeddings)
        pre = self.root / "preprocessor_config.json"
        stats = json.loads(pre.read_text()) if pre.is_file() else {}
        self.mean = torch.tensor(stats.get("image_mean", CLIP_MEAN)).view(1, 3, 1, 1)
        self.std = torch.tensor(stats.get("image_std", CLIP_STD)).view(1, 3, 1, 1)

    def prepare(self, images: Tensor) -> Tensor:
        """``(N, 3, H, W)`` in [-1, 1] -> ``(N, 3, S, S)`` normalised pixels, S the model's image size."""
        x = ((images.float() + 1) / 2).clamp(0, 1)
        h, w = x.shape[-2:]
        s = self.image_size
        if (h, w) != (s, s):
            scale = s / min(h, w)  # short side to s, then centre crop (CLIP's processor)
            size = (max(s, round(h * scale)), max(s, round(w * scale)))
            x = F.interpolate(x, size=size, mode="bicubic", antialias=True, align_corners=False).clamp(0, 1)
            top, left = (size[0] - s) // 2, (size[1] - s) // 2
            x = x[..., top:top + s, left:left + s]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def image_embeddings(self, images: Tensor, batch_size: int = 64) -> Tensor:
        """``(N, 3, H, W)`` in [-1, 1] -> unit-norm ``(N, P)``."""
        out = [_features(self.model.get_image_features(pixel_values=self.prepare(images[s:s + batch_size])
                                                       .to(self.device))).float().cpu()
               for s in range(0, len(images), batch_size)]
        return F.normalize(torch.cat(out), dim=-1)

    @torch.no_grad()
    def text_embeddings(self, captions: list[str], batch_size: int = 64) -> Tensor:
        """``N`` captions -> unit-norm ``(N, P)``."""
        out = []
        for s in range(0, len(captions), batch_size):
            batch = self.tokenizer(captions[s:s + batch_size], padding=True, truncation=True,
                                   max_length=self.max_tokens, return_tensors="pt").to(self.device)
            out.append(_features(self.model.get_text_features(input_ids=batch["input_ids"],
                                                              attention_mask=batch["attention_mask"])).float().cpu())
        return F.normalize(torch.cat(out), dim=-1)

    def scores(self, x: Tensor, captions: list[str], batch_size: int = 64) -> Tensor:
        """Per-item CLIP scores ``(N,)`` of images ``(N, 3, H, W)`` or clips ``(N, T, 3, H, W)``."""
        if len(x) != len(captions):
            raise ValueError(f"{len(x)} items for {len(captions)} captions")
        text = self.text_embeddings(captions, batch_size)
        if x.dim() == 4:
            return (100 * (self.image_embeddings(x, batch_size) * text).sum(-1)).clamp_min(0)
        if x.dim() == 5:
            n, t = x.shape[:2]
            frames = self.image_embeddings(x.reshape(n * t, *x.shape[2:]), batch_size).view(n, t, -1)
            return (100 * (frames * text[:, None]).sum(-1)).clamp_min(0).mean(dim=1)
        raise ValueError(f"CLIP score needs images (N, 3, H, W) or clips (N, T, 3, H, W), got {tuple(x.shape)}")


_SCORERS: dict[tuple[str, str], ClipScorer] = {}


def get_scorer(path, device: str = "cpu") -> ClipScorer:
    """One loaded model per (directory, device): evaluations during training reuse it."""
    key = (str(Path(str(path)).expanduser().resolve()), str(device))
    if key not in _SCORERS:
        _SCORERS[key] = ClipScorer(path, device)
    return _SCORERS[key]


def unavailable(reason: str, **extra) -> dict:
    return {"metric": "clip_score", "value": None, "available": False, "reason": reason, **extra}


def clip_score_record(path, fake: Tensor, prompts: list[str], family: str, real=None, device: str = "cpu",
                      batch_size: int = 64, known_real: tuple[float, int] | None = None) -> dict:
    """The ``clip_score`` record of samples ``fake`` made from ``prompts`` (one per sample).

    ``real``: ``() -> (items, their own captions) | None``, held-out real items scored the same way
    (``real_value``: the score of the data itself), called only when the model loaded;
    ``known_real``: ``(real_value, n_real)`` already computed (evaluations during training reuse
    it). Never raises for missing weights or an unsupported modality: the record says
    ``available: false`` and why.
    """
    if family == "audio":
        return unavailable("the CLIP score is defined for images and video, not audio (a CLAP score would be "
                           "the analogue; not offered)")
    try:
        scorer = get_scorer(path, device)
    except (FileNotFoundError, ValueError, ImportError, OSError) as exc:
        return unavailable(str(exc).splitlines()[0])
    values = scorer.scores(fake.detach().cpu(), list(prompts), batch_size)
    record = {"metric": "clip_score", "value": float(values.mean()),
              "std": float(values.std()) if len(values) > 1 else 0.0, "n_fake": len(values),
              "model": scorer.root.name, "model_key": scorer.key, "extractor": f"CLIP {scorer.root.name}",
              "image_size": scorer.image_size, "note": NOTE}
    if known_real is not None:
        record.update(real_value=known_real[0], n_real=known_real[1])
    elif real is not None and (items := real()) is not None:
        real_values = scorer.scores(items[0].detach().cpu(), list(items[1]), batch_size)
        record.update(real_value=float(real_values.mean()), n_real=len(real_values))
    return record

