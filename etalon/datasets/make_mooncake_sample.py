"""Generate etalon's shipped Mooncake-format sample trace (prefix reuse like agentic chat traffic).

Run from the repository root: ``python -m etalon.datasets.make_mooncake_sample``. It rewrites
``etalon/datasets/assets/mooncake_sample.jsonl``: 300 rows over about 60 s; every prompt starts
with one of 3 shared system prompts (2 blocks of 512 tokens), conversations resend their growing
history (earlier blocks reused), and each row ends in a partial block of its own. Generated here
from a seed, nothing downloaded; real traces in the same format replay with ``prompts.path``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SAMPLE_PATH = Path(__file__).resolve().parent / "assets" / "mooncake_sample.jsonl"
SAMPLE_SEED = 20261202
BLOCK = 512
MAX_BLOCKS = 12  # prompts stay under 6.5k tokens: they fit the sim model's 8192-token context


def make_rows(num_rows: int = 300, seed: int = SAMPLE_SEED) -> list[dict[str, object]]:
    rng = np.random.default_rng(seed)
    next_id = 100
    conversations: list[list[int]] = []
    rows, clock_ms = [], 0.0
    for _ in range(num_rows):
        clock_ms += float(rng.exponential(200.0))
        if conversations and rng.random() < 0.6:  # a follow-up turn: history plus new blocks
            chain = conversations[int(rng.integers(len(conversations)))]
        else:
            system = 2 * int(rng.integers(3))
            chain = [system, system + 1]  # system prompt s: blocks 2s and 2s+1
            conversations.append(chain)
        for _ in range(int(rng.integers(0, 3))):
            if len(chain) < MAX_BLOCKS - 1:
                chain.append(next_id)
                next_id += 1
        tail = int(rng.integers(16, BLOCK))
        ids = [*chain, next_id]
        next_id += 1
        rows.append({"timestamp": round(clock_ms, 1), "input_length": len(chain) * BLOCK + tail,
                     "output_length": int(rng.integers(16, 256)), "hash_ids": ids})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(SAMPLE_PATH))
    args = parser.parse_args()
    Path(args.out).write_text("".join(json.dumps(r) + "\n" for r in make_rows()), encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
