"""Tokenizer loading: the shipped BPE, local paths, hub names failing fast, and the training script."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from etalon.datasets import tokenizers as tokenizers_module
from etalon.datasets.tokenizers import BUILTIN_TOKENIZERS, TokenizerLoadError, load_tokenizer
from etalon.datasets.train_tokenizer import CORPUS_PATH, TOKENIZER_PATH, generate_corpus, train

TEXTS = [
    "Hello world, this prompt measures time to first token.",
    "def ttft_s(record):\n    return (record.first_token_ns - record.sent_ns) / 1e9\n",
    "Unicode survives: naïve café, 東京, emoji 🚀 and tabs\tand  double  spaces.",
    "",
]


@pytest.fixture(autouse=True)
def _fresh_cache():
    load_tokenizer.cache_clear()
    yield
    load_tokenizer.cache_clear()


def test_builtin_tokenizer_round_trips_without_special_tokens() -> None:
    tok = load_tokenizer("etalon-bpe-8k")
    assert tok.name == "etalon-bpe-8k" and tok.vocab_size == 8192
    for text in TEXTS:
        ids = tok.encode(text)
        assert all(isinstance(i, int) and 0 <= i < tok.vocab_size for i in ids)
        assert tok.decode(ids) == text
    assert tok.encode("") == []
    assert len(tok.encode("The benchmark")) == 2  # two whole words, nothing added around them
    assert tok.encode_batch(TEXTS[:2]) == [tok.encode(TEXTS[0]), tok.encode(TEXTS[1])]
    assert tok.count_tokens_batch(TEXTS[:2]) == [len(tok.encode(TEXTS[0])), len(tok.encode(TEXTS[1]))]


def test_tokenizers_are_cached_per_process() -> None:
    assert load_tokenizer("etalon-bpe-8k") is load_tokenizer("etalon-bpe-8k")


def test_shipped_file_is_small() -> None:
    assert BUILTIN_TOKENIZERS["etalon-bpe-8k"].stat().st_size < 1_000_000


def test_local_file_and_folder(tmp_path: Path) -> None:
    shutil.copy(TOKENIZER_PATH, tmp_path / "tokenizer.json")
    by_file = load_tokenizer(str(tmp_path / "tokenizer.json"))
    by_folder = load_tokenizer(str(tmp_path))
    builtin = load_tokenizer("etalon-bpe-8k")
    assert by_file.encode(TEXTS[0]) == by_folder.encode(TEXTS[0]) == builtin.encode(TEXTS[0])
    assert by_folder.name == str(tmp_path)


def test_local_path_errors(tmp_path: Path) -> None:
    with pytest.raises(TokenizerLoadError, match="no such file or directory"):
        load_tokenizer(str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(TokenizerLoadError, match=r"broken\.json.*cannot read"):
        load_tokenizer(str(tmp_path / "broken.json"))
    with pytest.raises(TokenizerLoadError, match="has no tokenizer.json"):
        load_tokenizer(str(tmp_path))
    with pytest.raises(TokenizerLoadError, match="non-empty string"):
        load_tokenizer("  ")


def test_hub_name_offline_fails_fast_with_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.monotonic()
    with pytest.raises(TokenizerLoadError) as info:
        load_tokenizer("meta-llama/Meta-Llama-3-8B-Instruct")
    assert time.monotonic() - started < 5.0
    message = str(info.value)
    assert "'meta-llama/Meta-Llama-3-8B-Instruct'" in message and "HF_HUB_OFFLINE" in message
    assert "etalon-bpe-8k" in message and "local path" in message and "\n" not in message


def test_hub_unreachable_is_detected_without_retries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")  # nothing listens on port 1
    assert "127.0.0.1:1 is unreachable" in tokenizers_module._hub_unreachable_cause()
    started = time.monotonic()
    with pytest.raises(TokenizerLoadError, match="127.0.0.1:1 is unreachable"):
        load_tokenizer("gpt2")
    assert time.monotonic() - started < 5.0


def test_training_script_reproduces_the_shipped_corpus_and_vocabulary() -> None:
    corpus = generate_corpus()
    assert corpus == CORPUS_PATH.read_text(encoding="utf-8")
    shipped = load_tokenizer("etalon-bpe-8k")
    retrained = train(corpus)
    assert retrained.get_vocab_size() == shipped.vocab_size
    assert retrained.encode(TEXTS[0]).ids == shipped.encode(TEXTS[0])
