"""The client-headroom estimate: peak planned output token rate against actors x per-actor capacity."""

from __future__ import annotations

import numpy as np

from etalon.core.workload import Schedule
from etalon.loadgen.headroom import actors_needed, headroom_warning, peak_token_rate


def _open(offsets_s: list[float], tokens: list[int]) -> Schedule:
    return Schedule(offsets_ns=(np.asarray(offsets_s) * 1e9).astype(np.int64),
                    prompt_tokens=np.full(len(tokens), 8, dtype=np.int64),
                    output_tokens=np.asarray(tokens, dtype=np.int64), warmup_requests=0,
                    concurrency=None, think_time_s=0.0, duration_s=None)


def test_peak_is_the_busiest_window():
    # 0.0, 0.5, 0.9 s start within one second (100 + 200 + 300 tokens); 1.0 s is outside [0, 1)
    s = _open([0.0, 0.5, 0.9, 1.0, 5.0], [100, 200, 300, 400, 50])
    assert peak_token_rate(s) == 900.0  # [0.5, 1.5): 200 + 300 + 400
    assert peak_token_rate(s, window_s=0.5) == 1400.0  # [0.9, 1.4): 700 tokens in 0.5 s
    closed = Schedule(offsets_ns=None, prompt_tokens=np.ones(3, dtype=np.int64),
                      output_tokens=np.ones(3, dtype=np.int64), warmup_requests=0, concurrency=2,
                      think_time_s=0.0, duration_s=None)
    assert peak_token_rate(closed) is None and headroom_warning(closed, 1, 10.0) is None


def test_warning_names_the_actors_needed():
    s = _open(list(np.arange(100) / 100), [3000] * 100)  # 100 rps x 3000 tokens: 300k tokens/s
    assert actors_needed(300_000, 100_000) == 3 and actors_needed(300_001, 100_000) == 4
    line = headroom_warning(s, 2, 100_000)
    assert line is not None and "~300,000 output tokens/s" in line and "client.num_actors=3" in line
    assert headroom_warning(s, 3, 100_000) is None
    assert headroom_warning(s, 1, 0.0) is None  # capacity 0 turns the warning off
