"""Token accounting against the server: planned vs server-counted prompt tokens, cached prompt
tokens, and where output token counts came from (pure)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from etalon.core.records import RequestRecord

# Which prompt count the latency/throughput metrics use (input_tokens_per_s, TTFT deadlines).
METRICS_PROMPT_TOKENS = "planned"


def token_accounting(records: Iterable[RequestRecord]) -> dict[str, Any]:
    """Totals over the given (measured) records; a key is None where no request had that value.

    ``server_over_planned`` is sum(server prompt tokens) / sum(planned) over requests the server
    counted (chat templates add tokens, a different tokenizer changes them); ``cached_fraction`` is
    sum(cached) / sum(server prompt tokens) over requests that reported cached tokens.
    """
    recs = list(records)
    counted = [r for r in recs if r.server_prompt_tokens is not None]
    cached = [r for r in recs if r.cached_tokens is not None]
    planned_counted = sum(r.prompt_tokens for r in counted)
    served = sum(r.server_prompt_tokens or 0 for r in counted)
    cached_total = sum(r.cached_tokens or 0 for r in cached)
    cached_base = sum(r.server_prompt_tokens or r.prompt_tokens for r in cached)
    sources = Counter(r.output_tokens_source for r in recs if r.status == "ok")
    return {
        "metrics_prompt_tokens": METRICS_PROMPT_TOKENS,
        "requests": len(recs),
        "prompt_tokens_planned": sum(r.prompt_tokens for r in recs),
        "server_counted_requests": len(counted),
        "prompt_tokens_server": served if counted else None,
        "server_over_planned": served / planned_counted if counted and planned_counted else None,
        "cached_reported_requests": len(cached),
        "cached_prompt_tokens": cached_total if cached else None,
        "cached_fraction": cached_total / cached_base if cached and cached_base else None,
        "output_tokens_source": dict(sorted(sources.items())),
    }


def accounting_notes(acc: dict[str, Any]) -> list[str]:
    """What a reader must know about the counts, one sentence each (empty when all is as expected)."""
    notes = []
    sources = acc["output_tokens_source"]
    ok = sum(sources.values())
    fallback = sources.get("tokenizer", 0) + sources.get("chunks", 0)
    if fallback:
        how = "the tokenizer" if sources.get("tokenizer") else "counting chunks"
        notes.append(f"output tokens of {fallback} of {ok} requests were counted by {how}: the server sent no usage")
    if sources.get("finish_length"):
        notes.append(f"output tokens of {sources['finish_length']} of {ok} requests are max_tokens, from finish_reason "
                     "'length': the server sent no usage")
    if acc["requests"] and acc["server_counted_requests"] == 0:
        notes.append("prompt tokens are the planned counts only: the server reported no usage.prompt_tokens")
    ratio = acc["server_over_planned"]
    if ratio is not None and abs(ratio - 1) > 0.05:
        notes.append(f"the server counted {ratio:.2f}x the planned prompt tokens (chat template or a different "
                     "tokenizer; set model.tokenizer to the server's)")
    if acc["cached_prompt_tokens"]:
        notes.append(f"the server served {acc['cached_prompt_tokens']} prompt tokens "
                     f"({acc['cached_fraction']:.1%}) from its prefix cache")
    return notes


def accounting_scalars(acc: dict[str, Any]) -> dict[str, float]:
    """MLflow metrics of the accounting (only those the server made known)."""
    out: dict[str, float] = {}
    for key, name in (("cached_prompt_tokens", "cached_prompt_tokens"), ("cached_fraction", "cached_prompt_fraction"),
                      ("prompt_tokens_server", "server_prompt_tokens"),
                      ("server_over_planned", "server_over_planned_prompt_tokens")):
        if acc[key] is not None:
            out[name] = float(acc[key])
    ok = sum(acc["output_tokens_source"].values())
    if ok:
        out["output_tokens_from_usage_fraction"] = acc["output_tokens_source"].get("usage", 0) / ok
    return out


__all__ = ["METRICS_PROMPT_TOKENS", "accounting_notes", "accounting_scalars", "token_accounting"]
