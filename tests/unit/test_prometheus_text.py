"""The fast exposition reader gives exactly what prometheus_client's parser gives, or declines."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from etalon.core.prometheus_text import parse_plain_exposition
from etalon.loadgen.scrape import ScrapeError, parse_metrics_text

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"


def _full(text: str) -> dict:
    samples: dict = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((str(k), str(v)) for k, v in sample.labels.items()))
            samples.setdefault(sample.name, []).append((labels, float(sample.value)))
    return samples


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        len(a[k]) == len(b[k]) and all(la == lb and (va == vb or (math.isnan(va) and math.isnan(vb)))
                                       for (la, va), (lb, vb) in zip(a[k], b[k]))
        for k in a)


@pytest.mark.parametrize("engine", ["vllm", "sglang", "tgi", "llamacpp"])
def test_recorded_engine_expositions_read_as_the_full_parser_reads_them(engine: str) -> None:
    text = (FIXTURES / f"{engine}.txt").read_text()
    fast = parse_plain_exposition(text)
    assert fast is not None and _same(fast, _full(text))


def test_escapes_special_values_timestamps_and_spacing() -> None:
    text = (
        "# HELP x_total with a \\\\ backslash\n"
        "# TYPE x_total counter\n"
        'x_total{path="a\\"b",note="line\\nbreak",dir="c:\\\\tmp"} 3\n'
        'h_bucket{le="+Inf" , model="m"} 7 1700000000000\n'
        "g NaN\n"
        "g2 -Inf\n"
        "g3{} 1.5e-3\n"
        "\n"
        "   \n"
    )
    fast = parse_plain_exposition(text)
    assert fast is not None and _same(fast, _full(text))
    assert fast["x_total"][0][0] == (("dir", "c:\\tmp"), ("note", "line\nbreak"), ("path", 'a"b'))
    assert fast["h_bucket"] == [((("le", "+Inf"), ("model", "m")), 7.0)]
    assert math.isnan(fast["g"][0][1]) and fast["g2"][0][1] == -math.inf and fast["g3"] == [((), 0.0015)]


@pytest.mark.parametrize("line", [
    "this is { not prometheus",
    'a{x="1"y="2"} 1',          # no comma between labels
    'a{x=1} 1',                 # unquoted value
    'a{x="1"} one',             # not a number
    'a{x="}"} 1',               # a brace inside a value: left to the full parser
    "a 1 2 3",
])
def test_anything_not_plain_is_declined(line: str) -> None:
    assert parse_plain_exposition(line + "\n") is None


def test_declined_text_still_goes_through_the_full_parser() -> None:
    assert parse_metrics_text('a{x="}"} 1\n') == {"a": [((("x", "}"),), 1.0)]}
    with pytest.raises(ScrapeError):
        parse_metrics_text("this is { not prometheus\n")
