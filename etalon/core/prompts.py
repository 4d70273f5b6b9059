"""Synthetic prompts that encode to an exact number of tokens with a given tokenizer."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol, runtime_checkable

import numpy as np

_WORD_RE = re.compile(r"^ [A-Za-z]{2,}$")
_PUNCTUATION = (",", ".")
_PUNCTUATION_PROB = 0.08
_ANCHOR_TEXT = "a"
_MAX_FIX_ROUNDS = 6
_MAX_TAIL_SWAPS = 64


@runtime_checkable
class Tokenizer(Protocol):
    """What the prompt builder needs from a tokenizer (content tokens only, no special tokens)."""

    vocab_size: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Sequence[int]) -> str: ...

    def __hash__(self) -> int: ...  # word pools are cached per tokenizer object


class PromptBuildError(ValueError):
    """The tokenizer cannot produce a prompt of the requested token count."""


@dataclass(frozen=True)
class WordPool:
    """Text pieces that each count as exactly one token wherever they are placed.

    ``words`` are " word" pieces (leading space) that encode, after any text, to one token;
    ``heads`` are bare words that encode to one token at the start of a prompt;
    ``punctuation`` are one-token marks that may follow a word.
    """

    words: np.ndarray
    heads: np.ndarray
    punctuation: np.ndarray


@lru_cache(maxsize=8)
def word_pool(tokenizer: Tokenizer) -> WordPool:
    """Find the one-token word pieces of a tokenizer (once per tokenizer object)."""
    anchor_ids = tokenizer.encode(_ANCHOR_TEXT)
    anchor_len = len(tokenizer.decode(anchor_ids))
    candidates: list[tuple[int, str]] = []
    for token_id in range(tokenizer.vocab_size):
        # Decode after an anchor: sentencepiece decoders drop a leading space on a lone token.
        piece = tokenizer.decode([*anchor_ids, token_id])[anchor_len:]
        if _WORD_RE.match(piece):
            candidates.append((token_id, piece))
    texts = [_ANCHOR_TEXT + piece for _, piece in candidates]
    encoded = _encode_many(tokenizer, texts)
    words = [piece for (tid, piece), ids in zip(candidates, encoded) if ids == [*anchor_ids, tid]]
    heads_encoded = _encode_many(tokenizer, [w[1:] for w in words])
    heads = [w[1:] for w, ids in zip(words, heads_encoded) if len(ids) == 1]
    punct = [p for p in _PUNCTUATION if tokenizer.encode(_ANCHOR_TEXT + p) == [*anchor_ids, *tokenizer.encode(p)]
             and len(tokenizer.encode(p)) == 1]
    if len(words) < 16 or not heads:
        raise PromptBuildError(
            f"tokenizer {getattr(tokenizer, 'name', tokenizer)!r} has too few one-token words "
            f"({len(words)} words, {len(heads)} prompt starts) to build prompts"
        )
    return WordPool(np.array(sorted(words), dtype=object), np.array(sorted(heads), dtype=object),
                    np.array(punct, dtype=object))


def _encode_many(tokenizer: Tokenizer, texts: Sequence[str]) -> list[list[int]]:
    """Encode a batch, using the tokenizer's parallel batch encoder when it has one."""
    encode_batch = getattr(tokenizer, "encode_batch", None)
    if encode_batch is not None:
        return [list(ids) for ids in encode_batch(list(texts))]
    return [tokenizer.encode(text) for text in texts]


def _count_many(tokenizer: Tokenizer, texts: Sequence[str]) -> list[int]:
    """Token counts of a batch, using the tokenizer's batch counter when it has one."""
    count_batch = getattr(tokenizer, "count_tokens_batch", None)
    if count_batch is not None:
        return list(count_batch(list(texts)))
    return [len(ids) for ids in _encode_many(tokenizer, texts)]


def _draft_pieces(pool: WordPool, num_tokens: int, request_index: int, rng: np.random.Generator,
                  continuation: bool = False) -> list[str]:
    """Draft ``num_tokens`` one-token pieces; the first two are unique per request index.

    A unique start means no two requests share a prefix, so servers cannot hit their prefix cache.
    """
    firsts = pool.words if continuation else pool.heads
    num_heads, num_words = len(firsts), len(pool.words)
    offset = int(rng.integers(num_heads * num_words))
    slot = (request_index + offset) % (num_heads * num_words)
    pieces = pool.words[rng.integers(num_words, size=num_tokens)]
    pieces[0] = firsts[slot % num_heads]
    if num_tokens > 1:
        pieces[1] = pool.words[slot // num_heads]
    if len(pool.punctuation) and num_tokens > 3:
        marks = rng.random(num_tokens) < _PUNCTUATION_PROB
        marks[:2] = False
        marks[1:] &= ~marks[:-1]  # two marks in a row may merge into one token
        pieces[marks] = pool.punctuation[rng.integers(len(pool.punctuation), size=int(marks.sum()))]
    return list(pieces)


def _fix_count(tokenizer: Tokenizer, pool: WordPool, pieces: list[str], num_tokens: int,
               rng: np.random.Generator) -> str:
    """Grow or trim the tail until the text encodes to exactly ``num_tokens`` tokens."""
    for _ in range(_MAX_FIX_ROUNDS):
        text = "".join(pieces)
        delta = num_tokens - len(tokenizer.encode(text))
        if delta == 0:
            return text
        if delta > 0:
            pieces.extend(pool.words[rng.integers(len(pool.words), size=delta)])
        else:
            del pieces[max(1, len(pieces) + delta):]
    for _ in range(_MAX_TAIL_SWAPS):  # last resort: a different final word may merge differently
        pieces[-1] = pool.words[rng.integers(len(pool.words))]
        text = "".join(pieces)
        if len(tokenizer.encode(text)) == num_tokens:
            return text
    raise PromptBuildError(
        f"cannot build a prompt of exactly {num_tokens} tokens with tokenizer "
        f"{getattr(tokenizer, 'name', tokenizer)!r}"
    )


def build_prompts(tokenizer: Tokenizer, prompt_tokens: np.ndarray | Sequence[int], seed: int,
                  continuation: bool = False) -> list[str]:
    """Build one prompt per entry of ``prompt_tokens``, each encoding to exactly that many tokens.

    Prompt ``i`` depends only on ``(seed, i, prompt_tokens[i])``: the same inputs give the same text.
    Its first two tokens are unique per ``i`` (no two prompts of one call share a prefix).
    ``continuation``: every piece carries its leading space, so the text can follow other text
    (a shared prefix) and still add exactly its own tokens with tokenizers that split at spaces.

    Fast path: when the tokenizer's one-token words concatenate without merging (checked on a
    fixed corpus once per tokenizer), each prompt is two unique leading pieces plus a slice of that
    corpus, a few microseconds per prompt; otherwise every draft is encoded and repaired.
    """
    counts = np.asarray(prompt_tokens, dtype=np.int64).reshape(-1)
    if counts.size and int(counts.min()) < 1:
        raise ValueError(f"prompt_tokens must be >= 1, got {int(counts.min())}")
    if seed is None:
        raise ValueError("seed must be an int, got None")
    pool = word_pool(tokenizer)
    corpus = _corpus(tokenizer)
    if corpus is not None:
        texts = _slice_prompts(pool, corpus, counts, int(seed), continuation)
        if _all_exact(tokenizer, texts[:_FAST_CHECKED_PROMPTS], counts[:_FAST_CHECKED_PROMPTS]):
            return texts
    rngs = [np.random.default_rng([int(seed), i]) for i in range(counts.size)]
    drafts = [_draft_pieces(pool, int(n), i, rng, continuation) for i, (n, rng) in enumerate(zip(counts, rngs))]
    texts = ["".join(pieces) for pieces in drafts]
    for i, num_tokens in enumerate(_count_many(tokenizer, texts)):
        if num_tokens != counts[i]:
            texts[i] = _fix_count(tokenizer, pool, drafts[i], int(counts[i]), rngs[i])
    return texts


_CORPUS_PIECES = 1 << 15
_CORPUS_SEED = 0
_FAST_CHECKED_PROMPTS = 32


@dataclass(frozen=True)
class _Corpus:
    """A fixed run of one-token pieces: ``text[char_at[k]:char_at[k + m]]`` is exactly m tokens."""

    text: str
    char_at: np.ndarray


def _all_exact(tokenizer: Tokenizer, texts: Sequence[str], counts: np.ndarray) -> bool:
    return list(_count_many(tokenizer, texts)) == counts.tolist()


@lru_cache(maxsize=8)
def _corpus(tokenizer: Tokenizer) -> _Corpus | None:
    """The tokenizer's corpus, or None when it merges across piece boundaries. One per tokenizer,
    whatever the seed: checking it encodes 32k pieces (~0.14 s), which each job of a sweep paid
    when every run's own prompt seed drew its own corpus. A run's prompts still differ from any
    other seed's: their unique leading pieces and the corpus positions they slice follow the seed."""
    pool = word_pool(tokenizer)
    rng = np.random.default_rng([_CORPUS_SEED, 0xC0])
    pieces = pool.words[rng.integers(len(pool.words), size=_CORPUS_PIECES)]
    if len(pool.punctuation):
        marks = rng.random(_CORPUS_PIECES) < _PUNCTUATION_PROB
        marks[0] = False
        marks[1:] &= ~marks[:-1]
        pieces[marks] = pool.punctuation[rng.integers(len(pool.punctuation), size=int(marks.sum()))]
    text = "".join(pieces)
    if len(tokenizer.encode(text)) != _CORPUS_PIECES:
        return None
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=_CORPUS_PIECES)
    char_at = np.zeros(_CORPUS_PIECES + 1, dtype=np.int64)
    np.cumsum(lengths, out=char_at[1:])
    return _Corpus(text, char_at)


def _slice_prompts(pool: WordPool, corpus: _Corpus, counts: np.ndarray, seed: int,
                   continuation: bool) -> list[str]:
    """Unique first two pieces per index, then ``n - 2`` corpus pieces from a seeded position."""
    firsts = pool.words if continuation else pool.heads
    num_first, num_words = len(firsts), len(pool.words)
    rng = np.random.default_rng([seed, 0x51])
    slots = (np.arange(counts.size) + int(rng.integers(num_first * num_words))) % (num_first * num_words)
    starts = np.random.default_rng([seed, 0x52]).integers(1 << 62, size=counts.size) % _CORPUS_PIECES
    body = np.maximum(counts - 2, 0)
    fits = starts + body <= _CORPUS_PIECES
    char_at = corpus.char_at
    begin = char_at[starts].tolist()
    end = char_at[np.where(fits, starts + body, starts)].tolist()
    heads = firsts[slots % num_first].tolist()
    seconds = np.where(counts >= 2, pool.words[slots // num_first], "").tolist()
    text = corpus.text
    out = [h + w + text[a:b] for h, w, a, b in zip(heads, seconds, begin, end)]
    for i in np.flatnonzero(~fits).tolist():  # a prompt longer than the corpus's rest wraps around
        out[i] = heads[i] + seconds[i] + _wrapped(corpus, int(starts[i]), int(body[i]))
    return out


def _wrapped(corpus: _Corpus, pos: int, count: int) -> str:
    parts = []
    while count > 0:
        take = min(count, _CORPUS_PIECES - pos)
        parts.append(corpus.text[corpus.char_at[pos]:corpus.char_at[pos + take]])
        count, pos = count - take, 0
    return "".join(parts)
