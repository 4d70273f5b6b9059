"""Fit the engine latency model of a live server (real or simulated) and write a sim preset.

Prefill profile: TTFT vs prompt tokens at concurrency 1 gives overhead + (prefill + context)*P.
Decode profile: the median TBT at batch sizes B and two prompt lengths gives
overhead + per_decode_seq*B + per_context_token*(summed context), separating the three terms.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time
from dataclasses import dataclass

import orjson

from etalon.core.calibration import fit_decode
from etalon.core.calibration import fit_prefill_linear as fit_prefill

DECODE_OUTPUT_TOKENS = 32
DECODE_PROMPT_TOKENS = (64, 1024)
PREFILL_REPEATS = 3


@dataclass
class Measurement:
    prompt_tokens: int
    ttft_s: float
    tbt_s: list[float]


_PROMPT_NUMBERS = itertools.count()


async def _measure(session, url: str, model: str, words: int, max_tokens: int,  # noqa: ANN001
                   headers: dict[str, str]) -> Measurement:
    # A unique first word: a prefix-caching server must compute every prompt in full.
    prompt = f"p{next(_PROMPT_NUMBERS)}" + " the" * max(words - 1, 1)
    body = {"model": model, "prompt": prompt, "max_tokens": max_tokens, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    sent_ns = time.monotonic_ns()
    chunk_ns: list[int] = []
    prompt_tokens = words
    async with session.post(url, json=body, headers=headers) as response:
        if response.status != 200:
            raise RuntimeError(f"calibration request failed: HTTP {response.status} "
                               f"{(await response.text())[:200]}")
        async for line in response.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = orjson.loads(line[6:])
            if chunk.get("usage"):
                prompt_tokens = chunk["usage"]["prompt_tokens"]
            if any(c.get("text") or (c.get("delta") or {}).get("content") for c in chunk["choices"]):
                chunk_ns.append(time.monotonic_ns())
    gaps = [(b - a) / 1e9 for a, b in zip(chunk_ns, chunk_ns[1:])]
    return Measurement(prompt_tokens, (chunk_ns[0] - sent_ns) / 1e9, gaps)


async def calibrate(base_url: str, model: str, prompt_tokens: list[int], batch_sizes: list[int],
                    api_key: str | None = None) -> dict[str, float]:
    import aiohttp

    url = base_url.rstrip("/") + "/completions"
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    async with aiohttp.ClientSession() as session:
        prefill: list[tuple[int, float]] = []
        for words in prompt_tokens:
            for _ in range(PREFILL_REPEATS):
                got = await _measure(session, url, model, words, 1, headers)
                prefill.append((got.prompt_tokens, got.ttft_s))
        decode: list[tuple[int, float, float]] = []
        for batch in batch_sizes:
            for words in DECODE_PROMPT_TOKENS:
                runs = await asyncio.gather(*(_measure(session, url, model, words,
                                                       DECODE_OUTPUT_TOKENS, headers)
                                              for _ in range(batch)))
                tbt_s = statistics.median(g for r in runs for g in r.tbt_s)
                # the median gap attends to the prompt plus about half the output, per sequence
                context = sum(r.prompt_tokens + DECODE_OUTPUT_TOKENS / 2 for r in runs)
                decode.append((batch, context, tbt_s))
    _, prefill_slope_s = fit_prefill(prefill)
    overhead_s, per_seq_s, per_ctx_s = fit_decode(decode)
    return {"step_overhead_s": overhead_s,
            "per_prefill_token_s": max(prefill_slope_s - per_ctx_s, 0.0),
            "per_decode_seq_s": per_seq_s, "per_context_token_s": per_ctx_s}


def preset_yaml(model: str, base_url: str, latency: dict[str, float]) -> str:
    lines = [f"# Calibrated with `python -m etalon.sim calibrate` against {base_url} ({model}).",
             "# prefill profile: TTFT vs prompt tokens at concurrency 1; decode profile: median TBT",
             "# at several batch sizes and two prompt lengths (least squares).",
             "served_model_name: ${model.name}", "context_tokens: ${model.context_tokens}",
             "tokenizer: ${model.tokenizer}", "scheduler: chunked", "latency:"]
    lines += [f"  {key}: {value:.9g}" for key, value in latency.items()]
    return "\n".join(lines) + "\n"


def run_calibration(args: argparse.Namespace) -> int:
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else None
    prompt_tokens = [int(v) for v in args.prompt_tokens.split(",")]
    batch_sizes = [int(v) for v in args.batch_sizes.split(",")]
    latency = asyncio.run(calibrate(args.base_url, args.model, prompt_tokens, batch_sizes, api_key))
    with open(args.out, "w", encoding="utf-8") as out:
        out.write(preset_yaml(args.model, args.base_url, latency))
    for key, value in latency.items():
        print(f"{key}: {value:.6g}")
    return 0
