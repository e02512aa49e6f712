"""Tiny randomly initialised Hugging Face text/image models, built offline and saved to a directory.

Used by the pretrained-encoder and CLIP-score tests: the real ``transformers`` loading code runs on
them (``from_pretrained(dir, local_files_only=True)``), so nothing is downloaded. Import only after
``pytest.importorskip("transformers")``.
"""

from __future__ import annotations

from pathlib import Path

import torch

# Characters the CLIP BPE vocabulary covers: every caption of the embedded data sets is lower-case
# letters, digits and spaces; anything else maps to <|endoftext|> (CLIP's unknown token).
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789"
_MERGES = [("t", "h"), ("th", "e</w>"), ("a", "l"), ("r", "e"), ("i", "n")]


def write_clip_tokenizer(path: Path) -> int:
    """A CLIP BPE tokenizer over single characters and a few merges, saved to ``path``; its size."""
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    tokens = list(_CHARS) + [c + "</w>" for c in _CHARS] + [a + b for a, b in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    # transformers 5 builds the tokenizer from the vocabulary and merges themselves (no files to
    # write first); save_pretrained writes tokenizer.json, which a real CLIP directory also has
    tok = transformers.CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=list(_MERGES))
    tok.save_pretrained(str(path))
    return len(tokens)


def _clip_text_config(vocab_size: int, **kw):
    import transformers

    return transformers.CLIPTextConfig(vocab_size=vocab_size, hidden_size=16, intermediate_size=32,
                                       num_hidden_layers=2, num_attention_heads=2, max_position_embeddings=32,
                                       projection_dim=8, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                                       pad_token_id=vocab_size - 1, **kw)


def tiny_clip_text(path: Path, seed: int = 0) -> Path:
    """A 2-layer, 16-wide ``CLIPTextModel`` with its tokenizer in ``path``."""
    import transformers

    vocab = write_clip_tokenizer(path)
    torch.manual_seed(seed)
    transformers.CLIPTextModel(_clip_text_config(vocab)).save_pretrained(str(path))
    return path


def tiny_clip(path: Path, seed: int = 0, image_size: int = 32) -> Path:
    """A full ``CLIPModel`` (text and vision towers, 8-d projections) with tokenizer and image processor."""
    import transformers

    vocab = write_clip_tokenizer(path)
    vision = transformers.CLIPVisionConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                           num_attention_heads=2, image_size=image_size, patch_size=8,
                                           projection_dim=8)
    config = transformers.CLIPConfig(text_config=_clip_text_config(vocab).to_dict(), vision_config=vision.to_dict(),
                                     projection_dim=8)
    torch.manual_seed(seed)
    transformers.CLIPModel(config).save_pretrained(str(path))
    transformers.CLIPImageProcessor(size={"shortest_edge": image_size},
                                    crop_size={"height": image_size, "width": image_size}).save_pretrained(str(path))
    return path


def tiny_t5_encoder(path: Path, seed: int = 0) -> Path:
    """A 2-layer, 16-wide ``T5EncoderModel`` with a Unigram tokenizer (tokenizer.json) in ``path``."""
    import transformers

    path.mkdir(parents=True, exist_ok=True)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    pieces += [("\u2581" + c, -3.0) for c in _CHARS] + [(c, -4.0) for c in _CHARS]
    tok = transformers.T5Tokenizer(vocab=pieces, extra_ids=0)
    tok.save_pretrained(str(path))
    config = transformers.T5Config(vocab_size=len(pieces), d_model=16, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                                   relative_attention_num_buckets=8, relative_attention_max_distance=16)
    torch.manual_seed(seed)
    transformers.T5EncoderModel(config).save_pretrained(str(path))
    return path
