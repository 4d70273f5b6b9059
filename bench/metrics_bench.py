"""Speed and memory of the full run summary on 100,000 requests x 500 tokens (no plots).

In memory: python bench/metrics_bench.py [--reference | --compiled] [--cold]
  (--reference: the numpy deadline maths; --compiled: the numba kernels at any size; default: as
  etalon.core.deadline_batch chooses; --cold: what a fresh process pays, numba's import and kernel
  load included, instead of warming the kernels first)
Where numpy stops paying off in a fresh process:
  python bench/metrics_bench.py --cold-sizes 128x75,1000x75,5000x75,20000x75
From Parquet (bounded memory): python bench/metrics_bench.py --requests 1000000 --tokens 200
  --write-parquet /tmp/r.parquet, then python bench/metrics_bench.py --from-parquet /tmp/r.parquet
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from etalon.core.records import RecordTable


def synthetic_table(n_requests: int, tokens_per_request: int, seed: int = 0) -> RecordTable:
    """Poisson arrivals at 20 rps, lognormal TTFT, per-request TBT level, jitter, chunks and stalls."""
    rng = np.random.default_rng(seed)
    n, k = n_requests, tokens_per_request
    scheduled_ns = np.cumsum(rng.exponential(0.05e9, n)).astype(np.int64)
    sent_ns = scheduled_ns + rng.exponential(0.5e6, n).astype(np.int64)
    ttft_ns = (rng.lognormal(np.log(0.25), 0.6, n) * 1e9).astype(np.int64)
    level_s = rng.lognormal(np.log(0.025), 0.25, n)  # per-request decode speed (batch size varies)
    gaps_s = level_s[:, None] * rng.lognormal(0.0, 0.3, (n, k - 1))
    gaps_s[rng.random((n, k - 1)) < 0.05] = 0.0  # several tokens in one chunk
    stalls = rng.random((n, k - 1)) < 0.002  # preemption / long prefill of a neighbour
    gaps_s[stalls] += rng.lognormal(np.log(0.3), 1.0, int(stalls.sum()))
    offsets_ns = np.zeros((n, k), dtype=np.int64)
    np.cumsum((gaps_s * 1e9).astype(np.int64), axis=1, out=offsets_ns[:, 1:])
    del gaps_s, stalls
    first_ns = sent_ns + ttft_ns
    token_ns = (offsets_ns + first_ns[:, None]).reshape(-1)
    del offsets_ns
    ok = rng.random(n) > 0.005
    return RecordTable(
        request_id=np.arange(n, dtype=np.int64),
        actor=np.arange(n, dtype=np.int64) % 4,
        scheduled_ns=scheduled_ns,
        sent_ns=sent_ns,
        first_token_ns=first_ns,
        end_ns=token_ns[k - 1 :: k] + 1_000_000,
        prompt_tokens=rng.integers(128, 4096, n),
        output_tokens=np.full(n, k, dtype=np.int64),
        requested_output_tokens=np.full(n, k, dtype=np.int64),
        ok=ok,
        warmup=np.arange(n) < 100,
        http_status=np.where(ok, 200, 500).astype(np.int64),
        error_type=np.where(ok, "", "http_error").astype(object),
        token_ns=token_ns,
        token_offsets=np.arange(n + 1, dtype=np.int64) * k,
    )


def _warm_kernels() -> None:
    """Compile (or load from numba's cache) the kernels once, outside the timed summary."""
    small = synthetic_table(200, 5, seed=1)
    from etalon.core.summary import summarize

    summarize(small, ttft_deadline_s=1.0, tbt_deadline_s=0.05, target_miss_rate=0.1)


def reference_functions() -> dict[str, Any]:
    """The numpy versions (etalon.core.deadlines) with the kernels' ``rows`` argument: the rows'
    tokens are re-packed first, as the summary did before it passed row indices."""
    from etalon.core import deadlines

    def packed(tokens: np.ndarray, offsets: np.ndarray, rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        return (tokens, offsets) if rows is None else deadlines._select_ragged(tokens, offsets, rows)

    def min_tbt_deadlines(tokens, offsets, sent, ttft, target, rows=None):  # type: ignore[no-untyped-def]
        if rows is None:
            return deadlines.min_tbt_deadlines(tokens, offsets, sent, ttft, target)
        assert ttft is None, "the summary passes rows only in gaps mode"
        return deadlines.min_tbt_deadlines(*packed(tokens, offsets, rows), sent[rows], None, target)

    return {
        "deadline_miss_counts": deadlines.deadline_miss_counts,
        "min_tbt_deadlines": min_tbt_deadlines,
        "miss_rate_quantile_curve": lambda tokens, offsets, targets, q=0.99, rows=None: (
            deadlines.miss_rate_quantile_curve(*packed(tokens, offsets, rows), targets, q)
        ),
        "pooled_gaps_s": lambda tokens, offsets, rows=None: deadlines.pooled_gaps_s(*packed(tokens, offsets, rows)),
    }


def _use_reference() -> None:
    from etalon.core import metrics

    for name, fn in reference_functions().items():
        setattr(metrics, name, fn)


def write_parquet(directory: Path, n_requests: int, tokens: int, chunk: int = 50_000) -> None:
    """The synthetic run as a records.parquet directory, written chunk by chunk (bounded memory)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from etalon.records.files import record_schema

    directory.mkdir(parents=True, exist_ok=True)
    schema = record_schema()
    shift_ns = 0
    for part, start in enumerate(range(0, n_requests, chunk)):
        t = synthetic_table(min(chunk, n_requests - start), tokens, seed=part)
        n = len(t)
        tokens_col = pa.ListArray.from_arrays(pa.array(t.token_offsets), pa.array(t.token_ns + shift_ns))
        cols = {
            "request_id": t.request_id + start, "actor": t.actor, "scheduled_ns": t.scheduled_ns + shift_ns,
            "sent_ns": t.sent_ns + shift_ns, "first_token_ns": t.first_token_ns + shift_ns,
            "token_ns": tokens_col, "end_ns": t.end_ns + shift_ns, "prompt_tokens": t.prompt_tokens,
            "output_tokens": t.output_tokens, "output_tokens_source": pa.array(["usage"] * n),
            "requested_output_tokens": t.requested_output_tokens,
            "status": np.where(t.ok, "ok", "error").astype(object), "http_status": t.http_status,
            "error_type": np.where(t.ok, None, "http_error"), "error_message": pa.nulls(n, pa.string()),
            "warmup": t.warmup & (start == 0), "node_id": pa.nulls(n, pa.string()),
        }
        arrays = [c if isinstance(c, pa.Array) else pa.array(c, type=schema.field(k).type) for k, c in cols.items()]
        pq.write_table(pa.Table.from_arrays(arrays, schema=schema), directory / f"part-{part:05d}.parquet")
        shift_ns = int(t.scheduled_ns.max()) + shift_ns + 50_000_000
        del t, tokens_col, cols, arrays


def from_parquet(directory: Path, batch_rows: int) -> None:
    from etalon.core.slo import TbtTtftSlo
    from etalon.records.chunked import summarize_file

    start, cpu_start = time.perf_counter(), time.process_time()
    summary = summarize_file(directory, TbtTtftSlo(ttft_s=1.0, tbt_s=0.05), batch_rows=batch_rows)
    wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    scalars = summary.scalars()
    print(f"records file {directory}: {summary.counts}")
    print(f"summary from Parquet in chunks of {batch_rows}: wall {wall_s:.2f} s (CPU {cpu_s:.2f} s)")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")
    print(f"ttft_p99_s={scalars.get('ttft_p99_s'):.4f} tbt_p99_s={scalars.get('tbt_p99_s'):.4f} "
          f"service_miss_rate={scalars.get('service_miss_rate'):.4f}")


def cold_sizes(sizes: str) -> None:
    """Per size (REQUESTSxTOKENS), the summary's wall time in a fresh process three ways."""
    print(f"{'requests':>9} {'tokens':>10} {'numpy':>8} {'compiled':>9} {'as chosen':>10}")
    for size in sizes.split(","):
        n, k = (int(v) for v in size.lower().split("x"))
        times = []
        for flag in ("--reference", "--compiled", None):
            out = subprocess.run([sys.executable, __file__, "--cold", "--requests", str(n), "--tokens", str(k),
                                  *([flag] if flag else [])], capture_output=True, text=True, check=True).stdout
            times.append(float(out.split("summary wall time: ")[1].split(" s")[0]))
        print(f"{n:>9} {n * k:>10} {times[0]:>7.2f}s {times[1]:>8.2f}s {times[2]:>9.2f}s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=100_000)
    parser.add_argument("--tokens", type=int, default=500)
    parser.add_argument(
        "--reference", action="store_true",
        help="use the vectorised numpy deadline maths (etalon.core.deadlines) the kernels replaced",
    )
    parser.add_argument("--compiled", action="store_true", help="the compiled kernels at any size")
    parser.add_argument("--cold", action="store_true", help="no warm-up: numba's import and kernel load are timed")
    parser.add_argument("--cold-sizes", help="REQUESTSxTOKENS,...: fresh-process times of both paths per size")
    parser.add_argument("--write-parquet", type=Path, help="write the synthetic run to this records.parquet dir, exit")
    parser.add_argument("--from-parquet", type=Path, help="summarise this records.parquet dir in chunks instead")
    parser.add_argument("--batch-rows", type=int, default=8192)
    args = parser.parse_args()
    if args.cold_sizes:
        cold_sizes(args.cold_sizes)
        return
    if args.write_parquet:
        write_parquet(args.write_parquet, args.requests, args.tokens)
        return
    if args.from_parquet:
        _warm_kernels()
        from_parquet(args.from_parquet, args.batch_rows)
        return
    from etalon.core import deadline_batch
    from etalon.core.summary import summarize

    if not args.cold:
        _warm_kernels()
    if args.reference:
        _use_reference()
    elif args.compiled:
        deadline_batch.COMPILED_ABOVE_TOKENS = -1
    table = synthetic_table(args.requests, args.tokens)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    start, cpu_start = time.perf_counter(), time.process_time()
    summary = summarize(table, ttft_deadline_s=1.0, tbt_deadline_s=0.05, target_miss_rate=0.1)
    wall_s, cpu_s = time.perf_counter() - start, time.process_time() - cpu_start
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    scalars = summary.scalars()
    path = "numpy" if args.reference else "compiled kernels" if "numba" in sys.modules else "numpy (as chosen)"
    print(f"requests={args.requests} tokens/request={args.tokens} tokens={table.token_ns.shape[0]}")
    print(f"summary wall time: {wall_s:.2f} s (CPU {cpu_s:.2f} s, all threads; {path})")
    print(f"peak RSS: {peak_gib:.2f} GiB (after building the table: {rss_before:.2f} GiB)")
    print(f"scalars: {len(scalars)}; ttft_p99_s={scalars.get('ttft_p99_s'):.4f} "
          f"tbt_p99_s={scalars.get('tbt_p99_s'):.4f} service_miss_rate={scalars.get('service_miss_rate'):.4f}")


if __name__ == "__main__":
    main()
