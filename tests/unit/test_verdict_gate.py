"""Verdict lines, gate parsing and the sweep figures' axis rules, on hand-built inputs."""

from __future__ import annotations


import numpy as np
import pytest

from etalon.core.comparison import SAME, WORSE, MetricDelta
from etalon.core.gate import GateError, parse_gates
from etalon.report.sweep import _varies, is_geometric
from etalon.report.verdict import capacity_lines, slo_lines


def _delta(key: str, relative: float, verdict: str, lower_is_better: bool = True) -> MetricDelta:
    return MetricDelta(key, 1.0, 1.0 + relative, relative, relative, relative / 2, relative * 2, verdict, lower_is_better)


def test_gate_parsing_and_violation() -> None:
    gates = {g.metric: g for g in parse_gates({"ttft_p99_s": "+5%", "output_tokens_per_s": "-3%", "tbt_p50_s": 0.002})}
    assert gates["ttft_p99_s"].limit == pytest.approx(0.05) and gates["ttft_p99_s"].relative
    assert not gates["tbt_p50_s"].relative and gates["tbt_p50_s"].limit == 0.002
    assert gates["ttft_p99_s"].violated(_delta("ttft_p99_s", 0.08, WORSE))
    assert not gates["ttft_p99_s"].violated(_delta("ttft_p99_s", 0.04, WORSE))  # within the limit
    assert not gates["ttft_p99_s"].violated(_delta("ttft_p99_s", 0.08, SAME))  # not detectable
    assert gates["output_tokens_per_s"].violated(_delta("output_tokens_per_s", -0.05, WORSE, lower_is_better=False))


@pytest.mark.parametrize("entries, message", [
    ({"ttft_p99": "+5%"}, "unknown metric 'ttft_p99'"),
    ({"ttft_p99_s": "5 percent"}, "bad threshold"),
    ({"ttft_p99_s": "-5%"}, "points the wrong way"),
    ({"output_tokens_per_s": "+5%"}, "points the wrong way"),
    ([], "must be a mapping"),
])
def test_bad_gate_entries_are_one_line(entries: object, message: str) -> None:
    with pytest.raises(GateError, match=message) as err:
        parse_gates(entries)
    assert "\n" not in str(err.value)


def test_slo_lines_show_every_judged_value_against_its_limit() -> None:
    verdict = {"passed": False, "metric": "ttft_p99_s", "value": 0.5, "threshold": 0.1,
               "values": {"ttft_p99_s": 0.5, "tbt_p99_s": 0.02}, "limits": {"ttft_p99_s": 0.1, "tbt_p99_s": 0.2}}
    (line,), failed = slo_lines(verdict)
    assert failed and line.startswith("SLO FAIL")
    assert "ttft_p99_s = 500 ms > 100 ms" in line and "tbt_p99_s = 20 ms <= 200 ms" in line


def test_capacity_lines_bracket_precision_and_out_of_probes() -> None:
    probes = [{"load": x, "passed": x < 10, "metric": "ttft_p99_s"} for x in (2, 4, 8, 16, 9)]
    data = {"search": "rate", "max_rate_rps": 9.0, "lowest_failing": 16.0, "probes": probes}
    lines, failed = capacity_lines(data, precision=0.05, max_probes=5)
    assert not failed and lines[0].startswith("capacity: 9 requests/s") and "bracket 9 .. 16" in lines[0]
    assert "stopped: out of probes (5 probes) at precision 43.8% (asked 5%)" in lines[1]
    data["lowest_failing"] = 9.3
    lines, _ = capacity_lines(data, precision=0.05, max_probes=16)
    assert "precision 3.2% (asked 5%): reached" in lines[1] and "deciding metric: ttft_p99_s" in lines[2]
    lines, failed = capacity_lines({**data, "max_rate_rps": None}, precision=0.05, max_probes=16)
    assert failed and lines[0].startswith("capacity: NONE")


def test_sweep_axis_rules() -> None:
    assert is_geometric(np.array([1, 2, 4, 8])) and is_geometric(np.array([10, 30, 90]))
    assert not is_geometric(np.array([1, 2, 3, 4])) and not is_geometric(np.array([1, 2]))
    import pandas as pd

    assert not _varies(pd.Series([0.0200, 0.02004, 0.01998]))  # a 0.4 ms wobble on 20 ms is constant
    assert _varies(pd.Series([0.02, 0.03]))


def test_capacity_interval_widens_when_a_bracket_end_does_not_hold() -> None:
    from etalon.stages.reprobe import capacity_interval

    loads, passing, failing = [8, 16, 32, 24, 28, 26], [8, 16, 24, 26], [32, 28]
    assert capacity_interval(loads, 26, 28, [True, True], [False, False], passing, failing) == (26, 28)
    # the lower end failed under another seed: the capacity may lie below it, down to the next pass
    assert capacity_interval(loads, 26, 28, [True, False], [False, False], passing, failing) == (24, 28)
    # the upper end passed under another seed: up to the next failing load
    assert capacity_interval(loads, 26, 28, [True, True], [False, True], passing, failing) == (26, 32)
    assert capacity_interval(loads, 8, 16, [True, False], [False], [8], [16]) == (None, 16)


def test_an_unconverged_search_says_so_and_a_vetoed_pass_is_named() -> None:
    # Seen on real vLLM: capacity.json said not converged (bracket 8 .. 16) while the verdict
    # printed "bracket 8 .. 8, precision 0.0% reached"; the deciding metric had in fact passed.
    probes = [{"load": 8.0, "passed": True, "metric": "ttft_p90_s", "value": 0.1, "threshold": 1.0},
              {"load": 16.0, "passed": False, "metric": "ttft_p90_s", "value": 0.2, "threshold": 1.0,
               "vetoes": "queue grows: median wait for the first token 90 -> 400 ms"}]
    data = {"search": "rate", "max_rate_rps": 8.0, "lowest_failing": 16.0, "probes": probes, "converged": False,
            "unconverged_reason": "probes ran out (max_probes=2) with the bracket [8, 16] (50% wide)"}
    lines, failed = capacity_lines(data, precision=0.1, max_probes=2)
    assert not failed and "bracket 8 .. 16" in lines[0]
    assert lines[1].strip() == "NOT CONVERGED: probes ran out (max_probes=2) with the bracket [8, 16] (50% wide) (2 probes)"
    assert "ttft_p90_s met; vetoed: queue grows" in lines[2]
