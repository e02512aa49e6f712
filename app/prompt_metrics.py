"""Prompt adherence with no download: do samples show what their prompts ask for?

For each embedded data set, a few caption attributes are read back from the samples and compared
with the attributes of the prompt each sample was generated from:

* shapes: ``shape`` (ShapesNet, the domain classifier), ``colour`` (network-free: the colour word
  of the median foreground pixel, foreground = far from the border's median colour),
  ``background`` (network-free: the border's median colour);
* moving digits: ``digit`` (DigitNet), ``direction`` (network-free: the first step of the
  bounce fit to the sprite's centre-of-mass track, snapped to 8 directions), ``colour`` (network-free: hue of the bright
  pixels);
* instruments: ``instrument`` (TimbreNet), ``register`` (network-free: the strongest spectral peak
  per frame, relative to the base note of the instrument the prompt names). A TimbreNet trained on
  the register words scored 0.23 on held-out items (its global pooling discards pitch), hence the rule.

The class readers are the domain classifiers (modalities/classifier.py: trained on the classifier
split, deterministic, cached by content hash); classifiers trained the same way on colour words
(0.76 on held-out shapes) and register words (0.23) read worse than the rules. Every record carries ``real_value``: the same reader's accuracy on held-out real items
against their own captions, i.e. what a perfect generator scores (the reader's ceiling).
Records: ``prompt_<attribute>_acc`` per attribute and ``prompt_all_acc`` (every checked attribute
right at once).
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import Tensor

from modalities.captions import DIRECTIONS, HUES, REGISTERS, SHAPE_COLOURS, colour_name, embedded_attributes, hue_name
from modalities.classifier import DomainSpec, get_classifier, predict, stack_split


@dataclass(frozen=True)
class Check:
    """One attribute and how to read it: the domain classifier (``kind="class"``, the attribute is
    the class) or a network-free rule (``"rule"``)."""

    attribute: str
    kind: str
    spec: DomainSpec | None = None
    values: tuple[str, ...] = ()
    rule: Callable[[Tensor, list[dict]], list[str]] | None = None  # (fake, prompt attributes) -> words


def direction_rule(clips: Tensor, targets=None) -> list[str]:
    """Initial direction of the sprite, snapped to 8 directions: the first step of the best
    constant-velocity-with-bounces fit to its centre-of-mass track (the motion metric's fit), which
    uses every frame and is not fooled by a bounce."""
    from modalities.video.sprites import fit_bounce, track_centres  # noqa: PLC0415

    centres, _ = track_centres(clips.float())
    out = []
    for c in centres.double().numpy():
        (_, fx), (_, fy) = fit_bounce(c[:, 0]), fit_bounce(c[:, 1])
        angle = math.atan2(fy[1] - fy[0], fx[1] - fx[0]) % (2 * math.pi)
        out.append(DIRECTIONS[int(round(angle / (math.pi / 4))) % 8])
    return out


def sprite_colour_rule(clips: Tensor, targets=None) -> list[str]:
    """Hue of the clip's bright pixels (the sprite is colour times alpha on black)."""
    x = ((clips.float() + 1) / 2).clamp(0, 1)  # (B, T, 3, H, W)
    bright = (x.amax(dim=2, keepdim=True) > 0.5).float()
    rgb = (x * bright).sum(dim=(1, 3, 4)) / bright.sum(dim=(1, 3, 4)).clamp_min(1.0)  # (B, 3)
    return [hue_name(colorsys.rgb_to_hsv(*c.tolist())[0]) for c in rgb]


def _shape_pixels(images: Tensor) -> tuple[Tensor, Tensor]:
    """``(B, 3, H, W)`` in [-1, 1] -> (0-255 images, background colour ``(B, 3)``: border median)."""
    img = ((images.float() + 1) * 127.5).clamp(0, 255)
    border = torch.cat([img[:, :, 0], img[:, :, -1], img[:, :, :, 0], img[:, :, :, -1]], dim=2)
    return img, border.median(dim=2).values


def shape_colour_rule(images: Tensor, targets=None) -> list[str]:
    """Colour word of the median foreground pixel (pixels far from the border colour); ``none``
    when nothing stands out from the background."""
    img, bg = _shape_pixels(images)
    out = []
    for im, b in zip(img, bg):
        fg = (im - b[:, None, None]).abs().sum(0) > 60
        out.append(colour_name(im[:, fg].median(dim=1).values.tolist()) if bool(fg.any()) else "none")
    return out


def background_rule(images: Tensor, targets=None) -> list[str]:
    """Background word of the border's median colour."""
    _, bg = _shape_pixels(images)
    return [colour_name(b.tolist(), background=True) for b in bg]


def register_rule(waves: Tensor, targets: list[dict], sample_rate: int = 16000) -> list[str]:
    """Pitch register relative to the instrument the prompt names (its base note).

    Every synthetic timbre has its strongest partial at the fundamental, so the pitch of a frame
    is its strongest spectral peak (60-2500 Hz, STFT 2048 / hop 256); the clip's step above the
    instrument's base is the mean over frames with at least 5 % of the loudest frame's energy,
    snapped to thirds of the two-octave range as in the captions.
    """
    from modalities.audio.synth import BASE_NOTE  # noqa: PLC0415

    x = waves.reshape(waves.shape[0], -1).float()
    spec = torch.stft(x, 2048, 256, window=torch.hann_window(2048), return_complex=True).abs()  # (B, F, T)
    freqs = torch.fft.rfftfreq(2048, 1 / sample_rate)
    band = (freqs > 60) & (freqs < 2500)
    spec, freqs = spec[:, band], freqs[band]
    out = []
    for s, target in zip(spec, targets):
        energy = s.pow(2).sum(0)
        frames = energy > 0.05 * energy.max().clamp_min(1e-12)
        midi = 69 + 12 * torch.log2(freqs[s[:, frames].argmax(0)] / 440)
        step = float((midi - BASE_NOTE[target["instrument"]]).mean())
        out.append(REGISTERS[min(2, max(0, int(step / 22 * 3)))])
    return out


def checks_for(dataset) -> list[Check]:
    from modalities.audio.synth import SynthInstrumentsDataset  # noqa: PLC0415
    from modalities.audio.timbrenet import TIMBRENET  # noqa: PLC0415
    from modalities.image import ShapesDataset  # noqa: PLC0415
    from modalities.image_domain import SHAPESNET  # noqa: PLC0415
    from modalities.video.digitnet import DIGITNET  # noqa: PLC0415
    from modalities.video.sprites import MovingDigitsDataset  # noqa: PLC0415

    if isinstance(dataset, ShapesDataset):
        return [Check("shape", "class", SHAPESNET), Check("colour", "rule", rule=shape_colour_rule, values=SHAPE_COLOURS),
                Check("background", "rule", rule=background_rule)]
    if isinstance(dataset, MovingDigitsDataset):
        return [Check("digit", "class", DIGITNET), Check("direction", "rule", rule=direction_rule, values=DIRECTIONS),
                Check("colour", "rule", rule=sprite_colour_rule, values=HUES)]
    if isinstance(dataset, SynthInstrumentsDataset):
        return [Check("instrument", "class", TIMBRENET), Check("register", "rule", values=REGISTERS,
                                                                rule=partial(register_rule, sample_rate=dataset.sample_rate))]
    return []


class Reader:
    """Reads one attribute from samples: ``__call__(x, targets) -> list[str]``; ``heldout_accuracy``
    is its accuracy on the held-out real items against their own captions."""

    def __init__(self, check: Check, dataset, cache_dir=None):
        self.check = check
        ref = dataset.reference_dataset()
        if ref is None:
            raise ValueError(f"{type(dataset).__name__} has no held-out split; prompt adherence needs one")
        ref_attrs = embedded_attributes(ref)
        if check.kind == "class":
            clf, (ref_x, _) = get_classifier(check.spec, dataset, cache_dir)
            self.net, self.values = clf.net, tuple(dataset.class_names)
        else:
            ref_x, _ = stack_split(ref)
            self.net, self.values = None, check.values
        truth = [str(a[check.attribute]) for a in ref_attrs]
        self.heldout_accuracy = sum(p == t for p, t in zip(self(ref_x, ref_attrs), truth)) / len(truth)

    def __call__(self, x: Tensor, targets: list[dict]) -> list[str]:
        """The attribute read from samples ``x``; ``targets``: each sample's prompt attributes
        (only rules that need context, e.g. the register's instrument, read them)."""
        if self.check.kind == "rule":
            return self.check.rule(x, targets)
        x = self.check.spec.prepare(x.detach().cpu().float())
        _, logits = predict(self.net, x)
        return [self.values[i] for i in logits.argmax(1).tolist()]


_READERS: dict[tuple, Reader] = {}


def prompt_adherence(fake: Tensor, dataset, prompt_attributes: list[dict], cache_dir=None) -> list[dict]:
    """Records ``prompt_<attribute>_acc`` and ``prompt_all_acc`` for samples ``fake`` made from prompts
    with ``prompt_attributes`` (one dict per sample, as modalities/captions.py writes them)."""
    checks = checks_for(dataset)
    if not checks or len(prompt_attributes) != len(fake):
        reason = ("no attribute readers for " + type(dataset).__name__) if not checks else \
            f"{len(prompt_attributes)} prompts for {len(fake)} samples"
        return [{"metric": "prompt_all_acc", "value": None, "available": False, "reason": reason}]
    fake = fake.detach().cpu().float()
    out, all_right, ceilings = [], torch.ones(len(fake), dtype=torch.bool), []
    for check in checks:
        key = (check.attribute, type(dataset).__name__, str(dataset.root), dataset.seed, str(cache_dir))
        if key not in _READERS:
            _READERS[key] = Reader(check, dataset, cache_dir)
        reader = _READERS[key]
        pred = reader(fake, prompt_attributes)
        right = torch.tensor([p == str(a[check.attribute]) for p, a in zip(pred, prompt_attributes)])
        all_right &= right
        ceilings.append(reader.heldout_accuracy)
        out.append({"metric": f"prompt_{check.attribute}_acc", "value": float(right.double().mean()),
                    "real_value": reader.heldout_accuracy, "reader": check.kind, "n_fake": len(fake),
                    "extractor": check.spec.name if check.spec else f"{check.attribute} rule (network-free)",
                    "note": "fraction of samples whose attribute, read back, matches the prompt; real_value: "
                            "the reader on held-out real items against their own captions"})
    out.append({"metric": "prompt_all_acc", "value": float(all_right.double().mean()), "n_fake": len(fake),
                "attributes": [c.attribute for c in checks], "real_value_upper_bound": min(ceilings)})
    return out
