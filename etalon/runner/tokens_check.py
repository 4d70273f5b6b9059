"""Before a run: does the configured tokenizer count prompts as the server does? Warn (or fail
with model.strict_tokenizer) when it is the shipped tokenizer against a real server, or when the
server's /tokenize disagrees with a planned prompt's length."""

from __future__ import annotations

import logging

from etalon.clients.base import EndpointSpec
from etalon.config import ConfigError, EtalonConfig

log = logging.getLogger("etalon")

SHIPPED_TOKENIZER = "etalon-bpe-8k"
CHECK_PROMPT_TOKENS = 256
# A planned prompt may differ from the server's count by this fraction (or 2 tokens) before it is told.
TOLERANCE = 0.05


def _tell(cfg: EtalonConfig, message: str) -> None:
    if cfg.model.strict_tokenizer:
        raise ConfigError(f"model.tokenizer: {message} (model.strict_tokenizer=true)")
    log.warning("etalon: warning: model.tokenizer: %s", message)
    print(f"etalon: warning: model.tokenizer: {message}", flush=True)


def check_tokenizer(cfg: EtalonConfig, spec: EndpointSpec, *, simulator: bool) -> int | None:
    """Run the checks; returns the server's count of the check prompt (None: no /tokenize)."""
    if simulator:
        return None  # the simulator counts with etalon's tokenizer by construction
    if cfg.model.tokenizer == SHIPPED_TOKENIZER:
        _tell(cfg, f"is the shipped {SHIPPED_TOKENIZER!r} but the endpoint is not the simulator: planned prompt "
                   "lengths will not be the server's; set model.tokenizer to the served model's tokenizer "
                   "(a local path or Hugging Face name)")
    planned = min(CHECK_PROMPT_TOKENS, max(cfg.model.context_tokens // 4, 1))
    counted = _server_count(cfg, spec, planned)
    if counted is None:
        return None
    count, url = counted
    if abs(count - planned) > max(2, TOLERANCE * planned):
        _tell(cfg, f"a prompt planned as {planned} tokens is {count} tokens by the server ({url}); set "
                   "model.tokenizer to the served model's tokenizer")
    else:
        log.info("tokenizer check: a %d-token prompt is %d tokens by %s", planned, count, url)
    return count


def _server_count(cfg: EtalonConfig, spec: EndpointSpec, planned: int) -> tuple[int, str] | None:
    from etalon.clients.identity import server_token_count
    from etalon.core.prompts import build_prompts
    from etalon.datasets.tokenizers import load_tokenizer

    prompt = build_prompts(load_tokenizer(cfg.model.tokenizer), [planned], seed=0)[0]
    return server_token_count(spec, prompt)


__all__ = ["check_tokenizer"]
