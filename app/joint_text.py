"""``modality=joint conditioning=text``: one caption encoder for every member (docs/joint_training.md).

The offline encoder's word vocabulary is built over the union of all active members' training
captions (members in config order, each member's items in item order, so the ids are a pure
function of the data sets); the pretrained encoder is one directory for all. Every member's
``TextSiT`` is then built with that encoder (identical text settings), so :class:`core.multimodal.JointSiT`
can share the text encoder, the pooled-text MLP and the text stream of its blocks. Each member
keeps its own captions: it trains on them, and its in-training samples and prompt metrics use its
own held-out captions (``app.text_build.prompt_set``).
"""

from __future__ import annotations

import logging

from hydra.utils import instantiate
from omegaconf import DictConfig

from modalities.captions import dataset_captions

from .config import ConfigError
from .text_build import CaptionEncoder

log = logging.getLogger("run")


def member_captions(name: str, dataset, c: DictConfig) -> tuple[list[str], list[dict] | None]:
    """``(captions, attributes)`` of member ``name``'s training items, or one ConfigError naming the member."""
    try:
        return dataset_captions(dataset, None, c.get("path_column", "path"), c.get("caption_column", "caption"))
    except (FileNotFoundError, ValueError) as exc:
        raise ConfigError(f"modality.members.{name}: conditioning=text needs a caption for every item of member "
                          f"{name!r} ({type(dataset).__name__}): {exc}. Add the captions (a <file>.txt beside each "
                          f"item) or leave the member out with modality.weights.{name}=0") from None


def joint_text_parts(cfg: DictConfig, member_cfgs: dict[str, DictConfig]) -> tuple[dict, dict]:
    """``(datasets, text_parts)`` per member: its instantiated data set, and ``{encoder, captions}``
    for :func:`app.build.build` (the encoder is one object shared by every member)."""
    c = cfg.conditioning
    if c.get("captions_csv"):
        raise ConfigError(f"conditioning.captions_csv={c.captions_csv}: one CSV cannot caption several members of "
                          "modality=joint; give each folder member sidecar captions (<file>.txt beside each item) "
                          "and drop conditioning.captions_csv")
    datasets, captions = {}, {}
    for name, mcfg in member_cfgs.items():
        datasets[name] = instantiate(mcfg.modality.dataset)
        captions[name] = member_captions(name, datasets[name], c)
    union = [caption for caps, _ in captions.values() for caption in caps]
    encoder = CaptionEncoder(c, union, cfg.get("cache_dir"))
    size = f"{len(encoder.vocab)} words" if encoder.vocab is not None else "pretrained"
    log.info("joint text conditioning: one %s encoder (%s) over %s captions", c.encoder, size,
             ", ".join(f"{n} {len(caps)}" for n, (caps, _) in captions.items()))
    return datasets, {name: {"encoder": encoder, "captions": captions[name]} for name in member_cfgs}
