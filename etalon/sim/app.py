"""aiohttp application of the simulated OpenAI-compatible server: routes, streaming, emission log."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import sys
import time
from typing import Any

import orjson
from aiohttp import web

from etalon.sim.config import RESET_PATH, SimConfig
from etalon.sim.faults import FaultInjector
from etalon.sim.modes import MODE_COUNTERS, ModeDraws, make_mode
from etalon.sim.prom import SimCounters, render_metrics
from etalon.sim.requests import ApiError, output_plan, prompt_token_ids
from etalon.sim.schedulers import EngineScheduler, IndependentScheduler
from etalon.sim.streams import StreamSpec, TokenStream, usage
from etalon.sim.tokens import TokenTable

# Bodies above this many bytes (~1000 prompt tokens) are counted in a worker thread.
INLINE_COUNT_MAX_BYTES = 4096


class EmissionLog:
    """One JSON line per finished request: when each token's chunk was written (monotonic ns)."""

    def __init__(self, path: str) -> None:
        self._file = open(path, "ab")  # noqa: SIM115 - held open for the server's lifetime

    def write(self, stream: TokenStream) -> None:
        entry: dict[str, Any] = {
            "request_id": stream.spec.request_id, "token_ns": stream.token_ns,
            "prompt_tokens": stream.spec.prompt_tokens, "output_tokens": stream.emitted,
            "finish_reason": stream.spec.finish_reason,
            "cached_tokens": stream.spec.cached_tokens, "arrival_ns": stream.spec.arrival_ns,
        }
        if stream.step_ns is not None:  # engine schedulers: each chunk's modelled step duration
            entry["step_ns"] = stream.step_ns
        if stream.mode is not None:  # else one token per chunk, no reasoning, usage truthful
            entry["chunk_tokens"] = stream.mode.chunk_tokens
            entry["reasoning_tokens"] = stream.mode.reasoning
            entry["reported_tokens"] = stream.mode.reported
        self._file.write(orjson.dumps(entry) + b"\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class SimServer:
    """Owns the scheduler, faults, counters and routes of one simulated model."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.table = TokenTable(config.tokenizer, config.seed)  # immutable: kept across resets
        self.emission_log = EmissionLog(config.emission_log_path) if config.emission_log_path else None
        self._task: asyncio.Task[None] | None = None
        self._handling = 0  # requests between arrival and their last byte (also while counting)
        self._fresh_state()

    def _fresh_state(self) -> None:
        """Everything a request can change, as a newly started server has it."""
        config = self.config
        self.scheduler: IndependentScheduler | EngineScheduler = (
            IndependentScheduler(config) if config.scheduler == "independent"
            else EngineScheduler(config))
        self.faults = FaultInjector(config.faults)
        self.counters = SimCounters()
        self.mode_counts = {name: 0 for name in MODE_COUNTERS}
        self.draws = ModeDraws(config.modes, self.mode_counts)
        self.rng = random.Random(config.seed)
        self._ids = itertools.count()
        self._inflight: set[TokenStream] = set()  # so /metrics counts tokens as they are emitted

    def make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post(RESET_PATH, self.reset)
        app.middlewares.append(_error_middleware)
        app.on_startup.append(self._start)
        app.on_cleanup.append(self._stop)
        return app

    async def _start(self, _app: web.Application) -> None:
        self._task = asyncio.get_running_loop().create_task(self.scheduler.run())

    async def _stop(self, _app: web.Application) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.emission_log is not None:
            self.emission_log.close()

    async def reset(self, request: web.Request) -> web.Response:
        """Back to the state of a fresh start (scheduler, KV cache, counters, fault and output
        draws, ids), so that etalon can reuse one simulator for the jobs of a sweep. Refused (409)
        while any request is being handled, and for a server with an emission log (one file per
        run). ``{"log_path": P}``: from now on stdout and stderr go to P (the next run's log)."""
        body = await _json_body(request) if request.can_read_body else {}
        if self.emission_log is not None:
            raise ApiError(409, "this server writes an emission log: start a fresh one per run", "reset_refused")
        busy = self._handling + self.scheduler.running() + self.scheduler.waiting()
        if busy:
            raise ApiError(409, f"{busy} request(s) still in progress", "reset_refused")
        log_path = body.get("log_path")
        if log_path is not None and not isinstance(log_path, str):
            raise ApiError(400, "log_path must be a string", "invalid_request")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._fresh_state()
        self._task = asyncio.get_running_loop().create_task(self.scheduler.run())
        if log_path:
            _redirect_output(log_path)
        return web.json_response({"reset": True})

    async def health(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def models(self, _request: web.Request) -> web.Response:
        model = {"id": self.config.served_model_name, "object": "model", "created": 0,
                 "owned_by": "etalon-sim", "max_model_len": self.config.context_tokens}
        return web.json_response({"object": "list", "data": [model]})

    async def metrics(self, _request: web.Request) -> web.Response:
        scheduler = self.scheduler
        is_engine = isinstance(scheduler, EngineScheduler)
        streaming_tokens = sum(stream.emitted for stream in self._inflight)
        self.counters.generation_tokens_total += streaming_tokens
        try:
            text = render_metrics(
                self.config.served_model_name, self.counters, scheduler.running(), scheduler.waiting(),
                scheduler.core.kv_usage() if is_engine else 0.0,
                scheduler.core.num_preemptions if is_engine else 0, self.faults.counts,
                prefix_cache_queries=scheduler.core.prefix_cache_queries_tokens if is_engine else 0,
                prefix_cache_hits=scheduler.core.prefix_cache_hits_tokens if is_engine else 0,
                modes=self.mode_counts)
        finally:
            self.counters.generation_tokens_total -= streaming_tokens
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def chat(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "chat")

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, "completions")

    async def _complete(self, request: web.Request, api: str) -> web.StreamResponse:
        arrival_ns = time.monotonic_ns()  # simulated latency counts from here, not after counting
        self._handling += 1
        try:
            return await self._handle(request, api, arrival_ns)
        finally:
            self._handling -= 1

    async def _handle(self, request: web.Request, api: str, arrival_ns: int) -> web.StreamResponse:
        body = await _json_body(request)
        if (request.content_length or 0) > INLINE_COUNT_MAX_BYTES:
            # A long prompt takes ~10 ms to count: off the event loop, so other streams keep their
            # pace (HF tokenizers release the GIL while encoding).
            prompt_ids = await asyncio.get_running_loop().run_in_executor(
                None, prompt_token_ids, api, body, self.table, self.config.chat_role_tokens)
        else:  # a short one costs less inline than a thread hand-off
            prompt_ids = prompt_token_ids(api, body, self.table, self.config.chat_role_tokens)
        spec = self._spec(request, body, api, len(prompt_ids))
        spec.arrival_ns = arrival_ns
        rejection = self.faults.admit(time.monotonic_ns())
        if rejection is not None:
            headers = {"Retry-After": str(rejection.retry_after_s)} if rejection.retry_after_s else {}
            error_type = "rate_limit_exceeded" if rejection.status == 429 else "server_error"
            raise ApiError(rejection.status, rejection.message, rejection.fault_type, error_type,
                           headers)
        slow_start_s = self.faults.slow_start_s()
        if slow_start_s:
            await asyncio.sleep(slow_start_s)  # nothing, not even headers, before this
        self.counters.prompt_tokens_total += spec.prompt_tokens
        if spec.streaming:
            return await self._stream(request, spec, arrival_ns, prompt_ids)
        return await self._non_stream(spec, arrival_ns, prompt_ids)

    def _spec(self, request: web.Request, body: dict[str, Any], api: str, prompt_tokens: int) -> StreamSpec:
        model = body.get("model")
        if model != self.config.served_model_name:
            raise ApiError(400, f"model {model!r} does not exist; this server serves "
                           f"{self.config.served_model_name!r}", "model_not_found")
        output_tokens, finish_reason = output_plan(body, prompt_tokens, self.config, self.rng)
        if isinstance(self.scheduler, EngineScheduler):
            problem = self.scheduler.check_fits(max(prompt_tokens, 1) + output_tokens)
            if problem:
                raise ApiError(400, problem, "context_length_exceeded")
        number = next(self._ids)
        rng = self.draws.rng(number)
        output_tokens, finish_reason = self.draws.short_output(
            output_tokens, finish_reason, bool(body.get("ignore_eos")), rng)
        options = body.get("stream_options") or {}
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        return StreamSpec(
            request_id=request.headers.get("X-Request-Id") or f"sim-{number}",
            response_id=f"{'chatcmpl' if api == 'chat' else 'cmpl'}-{number:x}",
            api=api, model=self.config.served_model_name, prompt_tokens=prompt_tokens,
            output_tokens=output_tokens, finish_reason=finish_reason,
            streaming=bool(body.get("stream")), include_usage=include_usage,
            continuous_usage=include_usage and bool(options.get("continuous_usage_stats")),
            reported_tokens=self.draws.reported_tokens(output_tokens, rng), number=number)

    async def _stream(self, request: web.Request, spec: StreamSpec, arrival_ns: int,
                      prompt_ids: list[int]) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                               "Cache-Control": "no-cache"})
        writer = await response.prepare(request)
        mode = make_mode(self.config.modes, spec.api, spec.output_tokens, spec.continuous_usage,
                         spec.reported_tokens, self.draws.rng(spec.number + (1 << 40)), self.mode_counts)
        stream = TokenStream(spec, self.table, request.transport, bool(getattr(writer, "chunked", False)),
                             self.faults.for_stream(spec.output_tokens), self.faults.count,
                             offset=self.rng.randrange(len(self.table.texts)), mode=mode)
        await self._run(stream, arrival_ns, prompt_ids)
        if stream.alive and stream.emitted >= spec.output_tokens:
            try:
                await response.write_eof()
            except ConnectionError:
                pass
        return response

    async def _non_stream(self, spec: StreamSpec, arrival_ns: int, prompt_ids: list[int]) -> web.Response:
        stream = TokenStream(spec, self.table, None, False, self.faults.for_stream(1),
                             self.faults.count, offset=self.rng.randrange(len(self.table.texts)))
        stream.faults.stall_at = stream.faults.disconnect_at = stream.faults.malformed_at = None
        await self._run(stream, arrival_ns, prompt_ids)
        text = stream.text()
        choice: dict[str, Any] = {"index": 0, "logprobs": None, "finish_reason": spec.finish_reason}
        if spec.api == "chat":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        return web.json_response({
            "id": spec.response_id, "created": int(time.time()), "model": spec.model,
            "object": "chat.completion" if spec.api == "chat" else "text_completion",
            "choices": [choice], "usage": usage(spec, spec.reported_tokens)}, dumps=lambda v: orjson.dumps(v).decode())

    async def _run(self, stream: TokenStream, arrival_ns: int, prompt_ids: list[int]) -> None:
        if self.emission_log is not None and isinstance(self.scheduler, EngineScheduler):
            stream.step_ns = []
        self.scheduler.submit(stream, arrival_ns, prompt_ids)
        self._inflight.add(stream)
        try:
            await stream.done
        finally:
            self._inflight.discard(stream)
            if stream.emitted < stream.spec.output_tokens:
                self.scheduler.abort(stream)
            self._account(stream, arrival_ns)

    def _account(self, stream: TokenStream, arrival_ns: int) -> None:
        self.counters.generation_tokens_total += stream.emitted
        if stream.emitted >= stream.spec.output_tokens:
            self.counters.request_success_total[stream.spec.finish_reason] += 1
            self.counters.observe_request(arrival_ns, stream.token_ns)
        if self.emission_log is not None:
            self.emission_log.write(stream)


def _redirect_output(path: str) -> None:
    """Point this process's stdout and stderr (file descriptors 1 and 2) at ``path``, appending."""
    sys.stdout.flush()
    sys.stderr.flush()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
    finally:
        os.close(fd)


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_json")
    return body


@web.middleware
async def _error_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as exc:
        return web.json_response(exc.body(), status=exc.status, headers=exc.headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        error = ApiError(exc.status, f"{exc.reason}: {request.method} {request.path}",
                         "not_found" if exc.status == 404 else "http_error")
        return web.json_response(error.body(), status=exc.status)
