"""Prompt builder: exact token counts, determinism, unique prefixes, text-like output."""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import pytest

from etalon.core.prompts import PromptBuildError, Tokenizer, build_prompts, word_pool
from etalon.datasets.tokenizers import load_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("etalon-bpe-8k")


class EncodeOnly:
    """Only the core Protocol (no batch helpers): the builder must still be exact."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.vocab_size = inner.vocab_size

    def encode(self, text: str) -> list[int]:
        return self._inner.encode(text)

    def decode(self, ids: Sequence[int]) -> str:
        return self._inner.decode(ids)


class MergingWordTokenizer:
    """A word-level tokenizer that also merges some adjacent word pairs into one token.

    Every word is one token alone, so the word pool accepts them all, but drafts containing a
    merging pair come out short: this exercises the builder's count repair.
    """

    WORDS = [f"w{chr(97 + i // 26)}{chr(97 + i % 26)}" for i in range(60)]

    def __init__(self) -> None:
        self.vocab_size = len(self.WORDS) + 2
        self._ids = {w: i for i, w in enumerate(self.WORDS)}

    def _pieces(self, text: str) -> list[str]:
        return re.findall(r" ?w[a-z]{2}|[,.]| ", text)

    def encode(self, text: str) -> list[int]:
        ids: list[int] = []
        for piece in self._pieces(text):
            word = piece.strip()
            token = self._ids.get(word, self.vocab_size) if word else self.vocab_size + 1
            # Merge (a, b) when a + b is a multiple of 7: the pair becomes one token id 1000 + a.
            if ids and ids[-1] < len(self.WORDS) and token < len(self.WORDS) and (ids[-1] + token) % 7 == 0:
                ids[-1] = 1000 + ids[-1]
                continue
            ids.append(token)
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        # Like byte-level BPE, a word token carries its leading space.
        return "".join(" " + self.WORDS[i] if i < len(self.WORDS) else "," for i in ids)


def test_exact_counts_for_many_random_lengths(tokenizer) -> None:
    counts = np.random.default_rng(0).integers(1, 5001, size=300)
    counts[:5] = [1, 2, 3, 4, 5]
    prompts = build_prompts(tokenizer, counts, seed=1)
    assert [len(tokenizer.encode(p)) for p in prompts] == counts.tolist()


def test_exact_count_for_a_16k_prompt(tokenizer) -> None:
    (prompt,) = build_prompts(tokenizer, np.array([16_384]), seed=3)
    assert len(tokenizer.encode(prompt)) == 16_384


def test_same_seed_same_prompts_and_each_depends_only_on_its_own_length(tokenizer) -> None:
    counts = np.array([50, 400, 7, 1200])
    first = build_prompts(tokenizer, counts, seed=9)
    assert build_prompts(tokenizer, counts, seed=9) == first
    assert build_prompts(tokenizer, counts, seed=10) != first
    changed = build_prompts(tokenizer, np.array([50, 999, 7, 1200]), seed=9)
    assert [changed[0], changed[2], changed[3]] == [first[0], first[2], first[3]]


def test_runs_with_other_seeds_share_the_checked_corpus_but_no_prompt_prefix(tokenizer) -> None:
    counts = np.full(200, 64)
    runs = []
    encodes = []

    class Counting(EncodeOnly):
        def encode(self, text: str) -> list[int]:
            encodes.append(len(text))
            return super().encode(text)

    counting = Counting(tokenizer)
    for seed in (101, 202, 303):
        runs.append(build_prompts(counting, counts, seed=seed))
    # the 32k-piece corpus is encoded once for the tokenizer, not once per seed
    assert sum(1 for n in encodes if n > 100_000) == 1
    prefixes = [{tuple(tokenizer.encode(p)[:2]) for p in run} for run in runs]
    assert all(len(p) == 200 for p in prefixes)
    assert len(prefixes[0] & prefixes[1]) + len(prefixes[1] & prefixes[2]) <= 2  # chance collisions only
    assert all(len(tokenizer.encode(p)) == 64 for run in runs for p in run)


def test_prompts_have_unique_prefixes(tokenizer) -> None:
    prompts = build_prompts(tokenizer, np.full(2000, 8), seed=4)
    first_two = {tuple(tokenizer.encode(p)[:2]) for p in prompts}
    assert len(first_two) == 2000


def test_prompts_look_like_text(tokenizer) -> None:
    (prompt,) = build_prompts(tokenizer, [2000], seed=5)
    words = re.findall(r"[A-Za-z]+", prompt)
    assert len(words) > 1500
    assert len(set(words)) > 800  # not one token repeated
    assert len(set(tokenizer.encode(prompt))) > 800
    assert prompt == prompt.strip() and "  " not in prompt


def test_protocol_only_tokenizer_is_exact(tokenizer) -> None:
    plain = EncodeOnly(tokenizer)
    assert isinstance(plain, Tokenizer)
    counts = [1, 13, 256, 999]
    prompts = build_prompts(plain, counts, seed=2)
    assert [len(tokenizer.encode(p)) for p in prompts] == counts
    assert prompts == build_prompts(tokenizer, counts, seed=2)


def test_count_repair_handles_context_dependent_merges() -> None:
    merging = MergingWordTokenizer()
    counts = np.random.default_rng(1).integers(1, 400, size=60)
    prompts = build_prompts(merging, counts, seed=0)
    assert [len(merging.encode(p)) for p in prompts] == counts.tolist()
    # The drafts really needed repair: an unrepaired draft of n pool words encodes shorter.
    pool = word_pool(merging)
    draft = "".join(pool.words[:40])
    assert len(merging.encode(pool.heads[0] + draft)) < 41


def test_bad_inputs(tokenizer) -> None:
    with pytest.raises(ValueError, match="prompt_tokens must be >= 1, got 0"):
        build_prompts(tokenizer, [5, 0], seed=1)
    with pytest.raises(ValueError, match="seed"):
        build_prompts(tokenizer, [5], seed=None)
    assert build_prompts(tokenizer, np.array([], dtype=np.int64), seed=1) == []


def test_tokenizer_without_words_fails_clearly() -> None:
    class Digits:
        vocab_size = 10

        def encode(self, text: str) -> list[int]:
            return [int(c) for c in text if c.isdigit()]

        def decode(self, ids: Sequence[int]) -> str:
            return "".join(str(i) for i in ids)

    with pytest.raises(PromptBuildError, match="too few one-token words"):
        build_prompts(Digits(), [3], seed=0)
