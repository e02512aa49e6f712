"""``conditioning=text``: captions, the caption encoding, the text model and the prompt set.

``build_text(cfg, dataset, tokenizer)`` turns the class-labelled data set into
``(raw, caption tensor)`` items and builds a :class:`core.text.model.TextSiT`; the prompt set (the
held-out split's captions, classes interleaved) conditions the in-training samples and evaluations
and gives the prompt-adherence metric its targets.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import DictConfig
from torch import Tensor

from core.text.model import TextSiT
from core.text.vocab import Vocabulary, words
from modalities.captions import CaptionedDataset, class_labels_of, dataset_captions

log = logging.getLogger("run")


def is_text(cfg: DictConfig) -> bool:
    node = cfg.get("conditioning")
    return node is not None and node.get("kind", "label") == "text"


@dataclass
class PromptSet:
    """Prompts with their encodings, classes and (embedded data) attributes; ``take(n)`` cycles."""

    captions: list[str]
    conditions: Tensor
    classes: Tensor
    attributes: list[dict] | None = None
    source: object = None  # the data set the captions describe (held-out split, else training set)
    items: list[int] | None = None  # prompt i is the caption of source[items[i]]

    def indices(self, n: int) -> list[int]:
        return [i % len(self.captions) for i in range(n)]

    def take(self, n: int) -> tuple[Tensor, Tensor]:
        """``(conditions (n, ...), class labels (n,))`` for ``Trainer.generate``."""
        idx = self.indices(n)
        return self.conditions[idx], self.classes[idx]

    def write_captions(self, path, n: int) -> Path:
        """Write the captions of the first ``n`` prompts (as ``take(n)`` cycles them), one per line."""
        path = Path(path)
        path.write_text("".join(self.captions[i] + "\n" for i in self.indices(n)))
        return path

    def attributes_of(self, n: int) -> list[dict] | None:
        return None if self.attributes is None else [self.attributes[i] for i in self.indices(n)]

    def real_items(self, n: int) -> tuple[Tensor, list[str]] | None:
        """The real items behind the first ``n`` prompts (each once) with their captions, ``None``
        without a source: the data's own score for metrics that compare samples with prompts."""
        if self.source is None or self.items is None:
            return None
        idx = list(range(min(n, len(self.captions))))
        x = torch.stack([torch.as_tensor(self.source[self.items[i]][0]) for i in idx])
        return x, [self.captions[i] for i in idx]


def interleave_classes(classes: Tensor) -> list[int]:
    """Item order that cycles through the classes (item 0 of every class, then item 1, ...)."""
    per_class: dict[int, list[int]] = {}
    for i, c in enumerate(classes.tolist()):
        per_class.setdefault(c, []).append(i)
    order, k = [], 0
    while len(order) < len(classes):
        order += [items[k] for _, items in sorted(per_class.items()) if k < len(items)]
        k += 1
    return order


class CaptionEncoder:
    """captions -> model input: word ids (offline) or cached pretrained features."""

    def __init__(self, c: DictConfig, train_captions: list[str], cache_root=None):
        self.max_len = int(c.max_len)
        if c.encoder == "offline":
            self.vocab, self.pretrained = Vocabulary.build(train_captions), None
            longest = self.vocab.longest(train_captions)
            if longest > self.max_len:
                log.warning("the longest caption has %d words; conditioning.max_len=%d cuts it", longest, self.max_len)
        elif c.encoder == "pretrained":
            from core.text.pretrained import PretrainedTextEncoder  # noqa: PLC0415

            self.vocab = None
            self.pretrained = PretrainedTextEncoder(c.pretrained_path, self.max_len, cache_root)
        else:
            raise ValueError(f"conditioning.encoder={c.encoder!r}: must be offline or pretrained")

    def __call__(self, captions: list[str]) -> Tensor:
        if self.vocab is not None:
            return self.vocab.encode(captions, self.max_len)
        return self.pretrained.encode(captions)


def build_text(cfg: DictConfig, dataset, tokenizer, encoder: CaptionEncoder | None = None,
               captions: tuple[list[str], list[dict] | None] | None = None) -> dict:
    """``{dataset, model, prompts, base_dataset, encoder}`` for a text-conditioned run.

    ``encoder`` and ``captions`` (``(captions, attributes)`` of ``dataset``) come from a joint run,
    whose members share one encoder built over all their captions (app/joint_text.py).
    """
    c, m = cfg.conditioning, cfg.model
    if captions is None:
        captions = dataset_captions(dataset, c.get("captions_csv"), c.get("path_column", "path"),
                                    c.get("caption_column", "caption"))
    captions, attributes = captions
    encoder = encoder or CaptionEncoder(c, captions, cfg.get("cache_dir"))
    text_dataset = CaptionedDataset(dataset, captions, encoder(captions), attributes)
    kwargs = dict(vocab=encoder.vocab.tokens) if encoder.vocab is not None else dict(
        feature_dim=encoder.pretrained.feature_dim, pretrained_encoder=encoder.pretrained.identity())
    model = TextSiT(in_channels=tokenizer.token_dim, hidden_size=m.hidden_size, depth=m.depth, num_heads=m.num_heads,
                    mlp_ratio=m.mlp_ratio, learn_sigma=m.learn_sigma, pos_axes=list(cfg.modality.pos_axes),
                    grad_checkpointing=m.grad_checkpointing, prediction=m.get("prediction", "v"),
                    max_text_len=int(c.max_len), text_arch=c.arch, text_time=c.text_time,
                    encoder_depth=int(c.encoder_depth), encoder_heads=c.get("encoder_heads"), **kwargs)
    prompts = prompt_set(dataset, encoder, c, cfg)
    log.info("text conditioning: %d captions (%d distinct), %s encoder, %s attention; e.g. %r", len(captions),
             len(set(captions)), c.encoder, c.arch, captions[0])
    return dict(dataset=text_dataset, model=model, prompts=prompts, base_dataset=dataset, encoder=encoder)


def prompt_set(dataset, encoder: CaptionEncoder, c: DictConfig, cfg: DictConfig) -> PromptSet:
    """The held-out split's captions (the training captions when there is none), classes interleaved."""
    ref = dataset.reference_dataset() if hasattr(dataset, "reference_dataset") else None
    source = ref if ref is not None and len(ref) else dataset
    columns = (c.get("path_column", "path"), c.get("caption_column", "caption"))
    try:  # a CSV's paths are relative to the root, which a held-out folder shares (same layout)
        captions, attributes = dataset_captions(source, c.get("captions_csv"), *columns)
    except (FileNotFoundError, ValueError) as exc:
        if source is dataset:
            raise
        log.warning("held-out items have no captions (%s); in-training samples use the training captions", exc)
        source = dataset
        captions, attributes = dataset_captions(source, c.get("captions_csv"), *columns)
    classes = class_labels_of(source)
    order = interleave_classes(classes)
    if c.get("num_prompts"):
        order = order[: int(c.num_prompts)]
    captions = [captions[i] for i in order]
    return PromptSet(captions=captions, conditions=encoder(captions), classes=classes[order],
                     attributes=None if attributes is None else [attributes[i] for i in order],
                     source=source, items=order)


def read_prompts(path) -> list[str]:
    """One prompt per line; blank lines are skipped. A missing or empty file is one clear error."""
    p = Path(str(path)).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"sample.prompts={p}: no such file (one prompt per line)")
    prompts = [" ".join(line.split()) for line in p.read_text().splitlines() if line.strip()]
    if not prompts:
        raise ValueError(f"sample.prompts={p}: the file has no prompt (one prompt per line)")
    return prompts


def encode_prompts(model: TextSiT, prompts: list[str], cfg: DictConfig) -> Tensor:
    """Prompts -> the model's input with the checkpoint's own vocabulary (or the pretrained encoder)."""
    if model.text_input == "ids":
        vocab = model.vocabulary
        unknown = sorted({w for p in prompts for w in words(p) if w not in vocab.index})
        if unknown:
            log.warning("words not in the training captions' vocabulary (read as <unk>): %s", unknown[:20])
        return vocab.encode(prompts, model.max_text_len)
    from core.text.pretrained import PretrainedTextEncoder  # noqa: PLC0415

    trained = model.pretrained_encoder or {}
    path = cfg.conditioning.get("pretrained_path") or trained.get("path")  # default: where training read it
    encoder = PretrainedTextEncoder(path, model.max_text_len, cfg.get("cache_dir"))
    if trained.get("key") and encoder.key != trained["key"]:
        raise ValueError(f"conditioning.pretrained_path={encoder.root} holds another text encoder than the checkpoint "
                         f"was trained with ({trained.get('name')} at {trained.get('path')}, content key "
                         f"{trained['key']}, here {encoder.key}); point it at that encoder's files")
    if encoder.feature_dim != model.feature_dim:
        raise ValueError(f"conditioning.pretrained_path={encoder.root}: features of width {encoder.feature_dim}, "
                         f"the checkpoint expects {model.feature_dim}")
    return encoder.encode(prompts)

