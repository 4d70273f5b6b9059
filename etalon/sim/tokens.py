"""Token counting and the per-token texts the simulator streams (each text is exactly one token)."""

from __future__ import annotations

import random
import sys
import zlib
from typing import Protocol

import orjson

# Words tried as emitted tokens; each must re-tokenise to one id, also when concatenated.
CANDIDATE_WORDS = (" the", " of", " and", " to", " in", " is", " that", " for", " it", " as",
                   " with", " was", " on", " be", " at", " by", " this", " are", " or", " from")
ROUNDTRIP_CHECK_TOKENS = 64


class Tokenizer(Protocol):
    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...


class WordTokenizer:
    """Whitespace words as tokens; used when ``sim.tokenizer`` is null.

    A word's id is a checksum of the word, so equal texts give equal ids (the prefix cache keys).
    """

    vocab_size = len(CANDIDATE_WORDS)

    def encode(self, text: str) -> list[int]:
        return [zlib.crc32(word.encode()) for word in text.split()]

    def decode(self, ids: list[int]) -> str:
        return "".join(CANDIDATE_WORDS[i % len(CANDIDATE_WORDS)] for i in ids)


def load_counting_tokenizer(name: str | None) -> Tokenizer:
    """The one switch point to the project tokenizer (etalon.datasets.tokenizers.load_tokenizer)."""
    if name is None:
        return WordTokenizer()
    try:
        from etalon.datasets.tokenizers import load_tokenizer
    except ImportError:
        print(f"etalon-sim: etalon.datasets.tokenizers unavailable; counting words instead of "
              f"{name!r} tokens", file=sys.stderr, flush=True)
        return WordTokenizer()
    return load_tokenizer(name)


def roundtrip_texts(tokenizer: Tokenizer, seed: int = 0) -> list[str]:
    """Token texts whose arbitrary concatenations re-tokenise to one token per text."""
    if isinstance(tokenizer, WordTokenizer):
        return list(CANDIDATE_WORDS)
    texts: list[str] = []
    for word in CANDIDATE_WORDS:
        ids = tokenizer.encode(word)
        if len(ids) == 1 and tokenizer.decode(ids) == word:
            texts.append(word)
    rng = random.Random(seed)
    while texts:
        sample = [rng.choice(texts) for _ in range(ROUNDTRIP_CHECK_TOKENS)]
        ids = tokenizer.encode("".join(sample))
        if len(ids) == ROUNDTRIP_CHECK_TOKENS:
            return texts
        texts.pop()  # drop candidates until concatenations stop merging
    raise ValueError("tokenizer has no single-token words that round-trip; cannot stream tokens")


class TokenTable:
    """Counts prompt tokens and hands out the JSON-escaped text of output token k."""

    def __init__(self, name: str | None, seed: int = 0) -> None:
        self.tokenizer = load_counting_tokenizer(name)
        self.texts = roundtrip_texts(self.tokenizer, seed)
        self.json_texts = [orjson.dumps(t) for t in self.texts]
        self.text_ids = [self.tokenizer.encode(t)[0] for t in self.texts]

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text)) if text else 0

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text) if text else []

    def output_ids(self, start: int, num_tokens: int) -> list[int]:
        """Token ids of ``text(start, num_tokens)``: the same ids its text re-encodes to."""
        ids, size = self.text_ids, len(self.text_ids)
        return [ids[(start + k) % size] for k in range(num_tokens)]

    def text(self, start: int, num_tokens: int) -> str:
        size = len(self.texts)
        return "".join(self.texts[(start + k) % size] for k in range(num_tokens))
