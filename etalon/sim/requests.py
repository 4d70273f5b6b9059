"""Parse and validate OpenAI chat/completions request bodies into a StreamSpec."""

from __future__ import annotations

import math
import random
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


def count_prompt_tokens(api: str, body: dict[str, Any], table: TokenTable) -> int:
    """Prompt tokens: the sum over message contents (no chat-template overhead) or the prompt."""
    if api == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty list", "invalid_messages")
        return sum(table.count(_content_text(m)) for m in messages)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return table.count(prompt)
    if isinstance(prompt, list) and all(isinstance(t, int) for t in prompt):
        return len(prompt)  # already token ids
    raise ApiError(400, "'prompt' must be a string, a one-string list or a list of token ids",
                   "invalid_prompt")


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
