"""Time a capacity search with and without early stopping (and with plain bisection) on the simulator.

    python bench/capacity_early_stop.py [--probe-duration-s 3] [--slo tbt_ttft]

Each variant starts from an empty probe cache, on the tiny engine preset (conf/experiment/
capacity_sim.yaml, analytic capacity ~31 requests/s). Prints total search time and probe counts.
The arms differ only in ``early_stop``: with it, a probe stops once its SLO is certainly lost or
its queue runs away, and expansion probes (before the first failure) run ``expand_fraction`` of
the probe length, a short bracket end being re-measured at full length before the search ends.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(PROJECT_DIR))

from tests.integration.test_prefill_profile import live_context  # noqa: E402

SLOS = {
    "tbt_ttft": ["slo=tbt_ttft", "slo.ttft_s=1.0", "slo.tbt_s=0.1"],
    "ttft_tpot": ["slo=ttft_tpot", "slo.ttft_s=1.0", "slo.tpot_s=0.05"],
}


def search_once(slo: str, early_stop: bool, interpolate: bool, probe_duration_s: float) -> dict:
    from etalon.stages import capacity_search

    overrides = ["+experiment=capacity_sim", "client.start_delay_s=0.2", *SLOS[slo]]
    with tempfile.TemporaryDirectory() as tmp, live_context(Path(tmp), overrides, "capacity_search") as make:
        started = time.monotonic()
        result = capacity_search.run(
            make(), search="rate", start_rate_rps=8.0, precision=0.05, max_probes=16, probe_requests=400,
            probe_duration_s=probe_duration_s, early_stop=early_stop, interpolate=interpolate,
        )
        elapsed = time.monotonic() - started
    probes = result.data["probes"]
    return {"time_s": elapsed, "probes": len(probes), "max_rate_rps": result.data["max_rate_rps"],
            "failing_time_s": sum(p["duration_s"] for p in probes if not p["passed"]),
            "trace": " ".join(f"{p['load']:.3g}{'+' if p['passed'] else '-'}" for p in probes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--probe-duration-s", type=float, default=3.0)
    parser.add_argument("--slo", choices=sorted(SLOS), default="tbt_ttft")
    args = parser.parse_args()
    variants = {
        "early stop, interpolating": (True, True),
        "no early stop, interpolating": (False, True),
        "early stop, plain bisection": (True, False),
    }
    results = {}
    for name, (early, interp) in variants.items():
        r = results[name] = search_once(args.slo, early, interp, args.probe_duration_s)
        print(f"{name:32s} total {r['time_s']:6.1f} s  (failing probes {r['failing_time_s']:5.1f} s)  "
              f"{r['probes']:2d} probes  max {r['max_rate_rps']:.4g} rps   [{r['trace']}]", flush=True)
    with_es = results["early stop, interpolating"]["time_s"]
    without = results["no early stop, interpolating"]["time_s"]
    print(f"early stop saves {100 * (1 - with_es / without):.0f}% of the search time "
          f"({with_es:.1f} s vs {without:.1f} s)")


if __name__ == "__main__":
    main()
