"""Frozen pretrained text encoders (CLIP or T5) from a local directory, with a caption cache.

Optional: needs ``transformers`` (``pip install -e ".[text]"``) and the files on disk; nothing is
downloaded (``local_files_only``). Features are computed once per caption and cached by content
hash (SHA-256 over the SHA-256 of every file in the encoder directory, ``max_len``, then the
caption) under ``<cache>/text_features/``, like latents are: a frozen encoder never runs twice on
one caption, a copy of the directory elsewhere reuses the features, other weights never do.

A full ``CLIPModel`` directory (text and vision towers, as CLIP checkpoints usually ship) works:
only its text tower is loaded.

The encoded layout is ``(L, 1 + E)`` per caption: channel 0 the valid-token flag, then the last
hidden state -- what :class:`core.text.encoder.FeatureAdapter` reads; the empty prompt is zeros.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path

import torch
from torch import Tensor

from ..io_utils import atomic_torch_save, cache_dir, sha256_file

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")
# model_type -> the transformers class of its text encoder. Exact names: umT5 has per-layer position
# biases, so loading it as T5 would drop weights; a full CLIP or T5 loads its text/encoder part only.
ENCODER_CLASSES = {"clip": "CLIPTextModel", "clip_text_model": "CLIPTextModel", "t5": "T5EncoderModel",
                   "mt5": "MT5EncoderModel", "umt5": "UMT5EncoderModel"}
TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "spiece.model")


@contextlib.contextmanager
def quiet_transformers(transformers):
    """transformers' loading reports (unused keys of a larger checkpoint) at error level only."""
    before = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(before)


def check_encoder_dir(path) -> Path:
    """The directory if it holds a loadable encoder, else FileNotFoundError naming the missing file."""
    root = Path(str(path)).expanduser() if path else None
    if root is None:
        raise FileNotFoundError("conditioning.encoder=pretrained needs conditioning.pretrained_path=<local directory "
                                "of a CLIP or T5 text encoder>; or use conditioning.encoder=offline")
    if not root.is_dir():
        raise FileNotFoundError(f"text encoder directory {root} does not exist (conditioning.pretrained_path)")
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"text encoder file {root / 'config.json'} is missing (conditioning.pretrained_path)")
    if not any((root / f).is_file() for f in WEIGHT_FILES):
        raise FileNotFoundError(f"text encoder weights {root / WEIGHT_FILES[0]} (or {', '.join(WEIGHT_FILES[1:])}) "
                                f"are missing (conditioning.pretrained_path)")
    if not any((root / f).is_file() for f in TOKENIZER_FILES):
        raise FileNotFoundError(f"text encoder tokenizer {root / TOKENIZER_FILES[0]} (or vocab.json + merges.txt, "
                                f"spiece.model) is missing (conditioning.pretrained_path)")
    return root


def _file_sha256(f: Path, memo: Path) -> str:
    """SHA-256 of a file's bytes, memoised in ``memo`` (a JSON file) by path, size and mtime_ns.

    Hashing a multi-GB encoder costs seconds, so it is done once per file version; the memo only
    saves time: the key it feeds is the content's, so a copied or moved directory shares features
    and new weights of the same size and time stamp do not.
    """
    st = f.stat()
    stamp = f"{f.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    try:
        table = json.loads(memo.read_text())
    except (OSError, ValueError):
        table = {}
    if stamp not in table:
        table[stamp] = sha256_file(f)
        memo.parent.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(table))
        os.replace(tmp, memo)  # atomic: concurrent ranks at worst hash twice
    return table[stamp]


def _dir_digest(root: Path, memo: Path) -> str:
    """Content digest of an encoder directory: SHA-256 over (file name, file SHA-256), sorted."""
    h = hashlib.sha256()
    for f in sorted(root.iterdir()):
        if f.is_file():
            h.update(f"{f.name}:{_file_sha256(f, memo)}\n".encode())
    return h.hexdigest()[:16]


class PretrainedTextEncoder:
    """``encode(captions) -> (B, max_len, 1 + E)`` with a CLIP or T5 text encoder, cached."""

    def __init__(self, path, max_len: int = 77, cache_root: str | Path | None = None, device: str = "cpu"):
        self.root = check_encoder_dir(path)
        try:
            import transformers  # noqa: PLC0415 -- optional extra
        except ImportError:
            raise ImportError('conditioning.encoder=pretrained needs transformers: pip install -e ".[text]"') from None
        config = json.loads((self.root / "config.json").read_text())
        kind = str(config.get("model_type", ""))
        if kind not in ENCODER_CLASSES:
            raise ValueError(f"{self.root / 'config.json'}: model_type {kind!r} is neither a CLIP nor a T5 text "
                             f"encoder (supported: {', '.join(ENCODER_CLASSES)})")
        cls = getattr(transformers, ENCODER_CLASSES[kind])
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(self.root), local_files_only=True)
        with quiet_transformers(transformers):  # a full CLIP's unused vision weights: a long, harmless table
            self.model = cls.from_pretrained(str(self.root), local_files_only=True)
        self.model = self.model.to(device).eval().requires_grad_(False)
        self.device, self.max_len = device, int(max_len)
        self.feature_dim = int(self.model.config.hidden_size if hasattr(self.model.config, "hidden_size")
                               else self.model.config.d_model)
        self.name = f"{kind}:{self.root.name}"
        features = Path(cache_dir("text_features", root=cache_root))
        self.key = hashlib.sha256(f"{_dir_digest(self.root, features / 'file_digests.json')}|{self.max_len}"
                                  .encode()).hexdigest()[:16]
        self.cache = features / self.key

    def identity(self) -> dict:
        """``{name, key, path}``: what a checkpoint records of the encoder its features came from."""
        return {"name": self.name, "key": self.key, "path": str(self.root)}

    def _path(self, caption: str) -> Path:
        return self.cache / f"{hashlib.sha256(caption.encode()).hexdigest()[:32]}.pt"

    @torch.no_grad()
    def _run(self, captions: list[str]) -> Tensor:
        batch = self.tokenizer(captions, padding="max_length", truncation=True, max_length=self.max_len,
                               return_tensors="pt").to(self.device)
        hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        mask = batch["attention_mask"].float()[..., None]
        return torch.cat([mask, hidden.float() * mask], dim=-1).cpu()

    def encode(self, captions: list[str], batch_size: int = 64) -> Tensor:
        out: list[Tensor | None] = [None] * len(captions)
        todo: list[str] = []
        for i, c in enumerate(captions):
            if c == "":
                out[i] = torch.zeros(self.max_len, 1 + self.feature_dim)
            elif self._path(c).is_file():
                out[i] = torch.load(self._path(c), weights_only=True)
            elif c not in todo:
                todo.append(c)
        self.cache.mkdir(parents=True, exist_ok=True)
        done = {}
        for s in range(0, len(todo), batch_size):
            batch = todo[s:s + batch_size]
            for c, f in zip(batch, self._run(batch)):
                done[c] = f.clone()
                atomic_torch_save(done[c], self._path(c))
        return torch.stack([o if o is not None else done[c] for o, c in zip(out, captions)])
