"""Word-level vocabulary built from training captions; saved in the checkpoint (``model_config``).

Ids: 0 = padding (also the empty prompt: a row of zeros is the null condition for CFG and text
dropout), 1 = unknown word, then words by decreasing count (ties alphabetical), so the same
captions always give the same ids.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence

import torch
from torch import Tensor

PAD, UNK = 0, 1
SPECIALS = ("<pad>", "<unk>")
_WORD = re.compile(r"[a-z0-9]+|[^\sa-z0-9]")


def words(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks: ``"A red-ish 7." -> [a, red, -, ish, 7, .]``."""
    return _WORD.findall(text.lower())


class Vocabulary:
    """``encode(captions, max_len) -> (B, max_len)`` long ids, padded with 0 (:data:`PAD`)."""

    def __init__(self, tokens: Sequence[str]):
        tokens = list(tokens)
        if tokens[:2] != list(SPECIALS):
            raise ValueError(f"a vocabulary starts with {SPECIALS}, got {tokens[:2]}")
        self.tokens = tokens
        self.index = {w: i for i, w in enumerate(tokens)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1, max_size: int | None = None) -> "Vocabulary":
        counts = Counter(w for c in captions for w in words(c))
        ranked = sorted((w for w, n in counts.items() if n >= min_count), key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *ranked])

    def __len__(self) -> int:
        return len(self.tokens)

    def ids(self, caption: str) -> list[int]:
        return [self.index.get(w, UNK) for w in words(caption)]

    def encode(self, captions: Sequence[str], max_len: int) -> Tensor:
        """``(B, max_len)`` ids; longer captions are cut at ``max_len`` words."""
        out = torch.full((len(captions), max_len), PAD, dtype=torch.long)
        for i, caption in enumerate(captions):
            ids = self.ids(caption)[:max_len]
            out[i, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: Tensor) -> str:
        return " ".join(self.tokens[i] for i in ids.tolist() if i != PAD)

    def longest(self, captions: Iterable[str]) -> int:
        return max((len(words(c)) for c in captions), default=0)
