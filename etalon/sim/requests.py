"""Parse and validate OpenAI chat/completions request bodies into a StreamSpec."""

from __future__ import annotations

import math
import random
import zlib
from typing import Any

from etalon.sim.config import OutputLengthsConfig, SimConfig
from etalon.sim.tokens import TokenTable


class ApiError(Exception):
    """An OpenAI-style error answer: HTTP status, error type, code and message."""

    def __init__(self, status: int, message: str, code: str,
                 error_type: str = "invalid_request_error",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.headers = headers
        self.status = status
        self.message = message
        self.code = code
        self.error_type = error_type

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.error_type,
                          "param": None, "code": self.code}}


def count_prompt_tokens(api: str, body: dict[str, Any], table: TokenTable, role_tokens: int = 0) -> int:
    """Prompt tokens under the rendering of ``prompt_token_ids``."""
    return len(prompt_token_ids(api, body, table, role_tokens))


def prompt_token_ids(api: str, body: dict[str, Any], table: TokenTable, role_tokens: int = 0) -> list[int]:
    """The token ids the simulated model reads: what it counts, and what its prefix cache keys on.

    Chat rendering (documented, so clients can account for prompt tokens exactly): for each
    message in order, ``role_tokens`` marker tokens of its role, then its content encoded on its
    own (content parts: their texts joined by one space); after the last message ``role_tokens``
    assistant markers (the generation prompt). So ``prompt_tokens = sum(content tokens) +
    role_tokens * (messages + 1)``; with ``role_tokens = 0`` (the default) it is the sum of the
    contents' tokens. A multi-turn history that resends the assistant's returned text therefore
    repeats, token for token, the prompt and output of the turn before it.
    Completions: the prompt string's tokens, or the token-id list as given.
    """
    if api == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty list", "invalid_messages")
        ids: list[int] = []
        for message in messages:
            content = _content_text(message)
            if role_tokens:
                ids.extend([_role_marker(message.get("role"))] * role_tokens)
            ids.extend(table.encode(content))
        if role_tokens:
            ids.extend([_role_marker("assistant")] * role_tokens)
        return ids
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return table.encode(prompt)
    if isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
        return list(prompt)  # already token ids
    raise ApiError(400, "'prompt' must be a string, a one-string list or a list of token ids",
                   "invalid_prompt")


def _role_marker(role: Any) -> int:
    """A reserved (negative) token id per role name; no text encodes to it."""
    if not isinstance(role, str) or not role:
        raise ApiError(400, "each message needs a 'role' string", "invalid_messages")
    return -1 - zlib.crc32(role.encode())


def _content_text(message: Any) -> str:
    if not isinstance(message, dict):
        raise ApiError(400, "each message must be an object with 'role' and 'content'",
                       "invalid_messages")
    content = message.get("content") or ""
    if isinstance(content, list):  # content parts: count the text parts
        return " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str):
        raise ApiError(400, "message 'content' must be a string or a list of parts",
                       "invalid_messages")
    return content


def _int_field(body: dict[str, Any], key: str, default: int | None) -> int | None:
    value = body.get(key, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ApiError(400, f"'{key}' must be a non-negative integer, got {value!r}",
                       "invalid_parameter")
    return value


def output_plan(body: dict[str, Any], prompt_tokens: int, config: SimConfig,
                rng: random.Random) -> tuple[int, str]:
    """Number of output tokens and the truthful finish_reason ("length" or "stop")."""
    if _int_field(body, "n", 1) != 1:
        raise ApiError(400, "only n=1 is supported", "unsupported_n")
    if prompt_tokens > config.context_tokens:
        raise ApiError(400, f"prompt has {prompt_tokens} tokens, more than the model's context "
                       f"of {config.context_tokens} tokens", "context_length_exceeded")
    max_tokens = _int_field(body, "max_completion_tokens", None)
    if max_tokens is None:
        max_tokens = _int_field(body, "max_tokens", None)
    room = config.context_tokens - prompt_tokens
    if max_tokens is None:
        max_tokens = room
    if max_tokens < 1 or max_tokens > room:
        raise ApiError(400, f"max_tokens={max_tokens} with {prompt_tokens} prompt tokens does not "
                       f"fit the context of {config.context_tokens} tokens (at most {room})",
                       "context_length_exceeded")
    min_tokens = _int_field(body, "min_tokens", 0) or 0
    if min_tokens > max_tokens:
        raise ApiError(400, f"min_tokens={min_tokens} exceeds max_tokens={max_tokens}",
                       "invalid_parameter")
    if body.get("ignore_eos"):
        return max_tokens, "length"
    natural = max(sample_output_tokens(config.output_lengths, rng), min_tokens, 1)
    if natural >= max_tokens:
        return max_tokens, "length"
    return natural, "stop"


def sample_output_tokens(lengths: OutputLengthsConfig, rng: random.Random) -> int:
    """Where the model would stop on its own (EOS), from the configured distribution."""
    if lengths.kind == "fixed":
        value = float(lengths.median_tokens)
    elif lengths.kind == "uniform":
        value = float(rng.randint(lengths.min_tokens, lengths.max_tokens))
    else:
        value = rng.lognormvariate(math.log(lengths.median_tokens), lengths.sigma)
    return int(min(max(round(value), lengths.min_tokens), lengths.max_tokens))
