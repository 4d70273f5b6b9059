"""Load tokenizers by name: the shipped etalon-bpe-8k, a local file or folder, or a Hugging Face hub name."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
BUILTIN_TOKENIZERS = {"etalon-bpe-8k": ASSETS_DIR / "etalon-bpe-8k.json"}
HUB_PROBE_TIMEOUT_S = 3.0


class TokenizerLoadError(RuntimeError):
    """A tokenizer could not be loaded; the message names it and the cause."""


class FastTokenizer:
    """A ``tokenizers.Tokenizer`` (tokenizer.json) that encodes content only, no special tokens."""

    def __init__(self, backend: Any, name: str) -> None:
        self._backend = backend
        self.name = name
        self.vocab_size: int = backend.get_vocab_size(with_added_tokens=True)

    def encode(self, text: str) -> list[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """Encode many texts at once (Rust threads)."""
        return [enc.ids for enc in self._encode_batch(texts)]

    def count_tokens_batch(self, texts: Sequence[str]) -> list[int]:
        """Token count of each text: what the prompt builder uses to verify its prompts quickly."""
        return [len(enc) for enc in self._encode_batch(texts)]

    def _encode_batch(self, texts: Sequence[str]) -> list[Any]:
        # encode_batch_fast (tokenizers >= 0.20) skips offset tracking: ~1.5x faster.
        encode = getattr(self._backend, "encode_batch_fast", self._backend.encode_batch)
        return encode(list(texts), add_special_tokens=False)

    def decode(self, ids: Sequence[int]) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"FastTokenizer(name={self.name!r}, vocab_size={self.vocab_size})"


class TransformersTokenizer:
    """A ``transformers`` tokenizer (for folders and hub models that have no tokenizer.json)."""

    def __init__(self, backend: Any, name: str) -> None:
        self._backend = backend
        self.name = name
        self.vocab_size: int = len(backend)

    def encode(self, text: str) -> list[int]:
        return list(self._backend.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int]) -> str:
        return self._backend.decode(list(ids), skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"TransformersTokenizer(name={self.name!r}, vocab_size={self.vocab_size})"


@lru_cache(maxsize=16)
def load_tokenizer(name_or_path: str) -> FastTokenizer | TransformersTokenizer:
    """Load (once per process) the built-in ``etalon-bpe-8k``, a local path, or a hub name.

    Raises TokenizerLoadError with one line naming the tokenizer and the cause.
    """
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise TokenizerLoadError(f"tokenizer name must be a non-empty string, got {name_or_path!r}")
    if name_or_path in BUILTIN_TOKENIZERS:
        return _from_file(BUILTIN_TOKENIZERS[name_or_path], name_or_path)
    path = Path(name_or_path).expanduser()
    if path.exists():
        return _from_local_path(path, name_or_path)
    if _looks_like_path(name_or_path):
        raise TokenizerLoadError(f"tokenizer {name_or_path!r}: no such file or directory ({path.resolve()})")
    return _from_hub(name_or_path)


def _looks_like_path(name: str) -> bool:
    return name.startswith((".", "/", "~")) or name.endswith(".json") or name.count("/") > 1


def _from_file(path: Path, name: str) -> FastTokenizer:
    from tokenizers import Tokenizer

    try:
        return FastTokenizer(Tokenizer.from_file(str(path)), name)
    except Exception as exc:  # the Rust loader raises plain Exception on a bad file
        raise TokenizerLoadError(f"tokenizer {name!r}: cannot read {path}: {exc}") from exc


def _from_local_path(path: Path, name: str) -> FastTokenizer | TransformersTokenizer:
    if path.is_file():
        return _from_file(path, name)
    if (path / "tokenizer.json").is_file():
        return _from_file(path / "tokenizer.json", name)
    try:
        from transformers import AutoTokenizer
    except ImportError as exc:
        raise TokenizerLoadError(
            f"tokenizer {name!r}: folder {path} has no tokenizer.json and 'transformers' is not installed "
            "to read other tokenizer formats (pip install transformers)"
        ) from exc
    try:
        return TransformersTokenizer(AutoTokenizer.from_pretrained(str(path), local_files_only=True), name)
    except Exception as exc:
        raise TokenizerLoadError(f"tokenizer {name!r}: transformers cannot load folder {path}: {exc}") from exc


def _hub_error(name: str, cause: str) -> TokenizerLoadError:
    return TokenizerLoadError(
        f"tokenizer {name!r}: cannot load it from the Hugging Face hub ({cause}); "
        "pass a local path to a tokenizer.json or its folder, or use the built-in 'etalon-bpe-8k'"
    )


def _from_hub(name: str) -> FastTokenizer | TransformersTokenizer:
    """Hub name: use the local HF cache first; go online only if the hub answers quickly."""
    from huggingface_hub import hf_hub_download

    try:
        return _from_file(Path(hf_hub_download(name, "tokenizer.json", local_files_only=True)), name)
    except TokenizerLoadError:
        raise
    except Exception:
        pass  # not cached: try online below
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    if offline:
        raise _hub_error(name, "not in the local cache and HF_HUB_OFFLINE is set")
    unreachable = _hub_unreachable_cause()
    if unreachable is not None:
        # Fail now: huggingface_hub would retry with back-off for ~20 s before giving up.
        raise _hub_error(name, unreachable)
    try:
        return _from_file(Path(hf_hub_download(name, "tokenizer.json")), name)
    except TokenizerLoadError:
        raise
    except Exception as exc:
        fast_cause = f"{type(exc).__name__}: {exc}".splitlines()[0]
    return _from_hub_transformers(name, fast_cause)


def _from_hub_transformers(name: str, fast_cause: str) -> TransformersTokenizer:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise _hub_error(name, fast_cause) from None
    try:
        return TransformersTokenizer(AutoTokenizer.from_pretrained(name), name)
    except Exception as exc:
        raise _hub_error(name, f"{fast_cause}; transformers: {exc}".splitlines()[0]) from exc


def _hub_unreachable_cause() -> str | None:
    """Why the hub cannot be reached (None when it can, or when a proxy makes probing moot)."""
    if any(os.environ.get(key) for key in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
        return None
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=HUB_PROBE_TIMEOUT_S):
            return None
    except OSError as exc:
        return f"{host}:{port} is unreachable: {exc}"
