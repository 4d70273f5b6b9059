"""Prometheus text exposition (format 0.0.4) -> samples, for the plain lines every engine writes.

``prometheus_client``'s parser builds a metric family object per ``# TYPE`` block and parses each
line character by character: ~18 ms for the simulator's 725-line exposition, paid for every scrape
of a run at its end. This reads the common shape (``name{label="value",...} value [timestamp]``)
with two regular expressions, ~10x faster, and declines (returns None) on anything else, so the
caller can hand the text to the full parser, which also reports malformed text.
"""

from __future__ import annotations

import re

from etalon.core.server_metrics import Labels, Samples

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^{}\n]*)\})?[ \t]+(\S+)(?:[ \t]+-?[0-9]+)?[ \t]*")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*(,|$)')
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"\\": "\\", '"': '"', "n": "\n"}


def parse_plain_exposition(text: str) -> Samples | None:
    """Sample name -> [(sorted (label, value) pairs, value)] in text order, as
    ``prometheus_client.parser.text_string_to_metric_families`` gives them (histogram
    ``_bucket``/``_sum``/``_count`` and counter ``_total`` names as written, ``le`` as written);
    None when a line is not of the plain shape (the full parser then decides)."""
    samples: Samples = {}
    for line in text.split("\n"):
        if not line or line[0] == "#" or line.isspace():
            continue
        match = _SAMPLE.fullmatch(line)
        if match is None:
            return None
        name, label_text, raw_value = match.groups()
        labels = _labels(label_text) if label_text else ()
        value = _value(raw_value)
        if labels is None or value is None:
            return None
        samples.setdefault(name, []).append((labels, value))
    return samples


def _labels(text: str) -> Labels | None:
    pairs: list[tuple[str, str]] = []
    end = 0
    for match in _LABEL.finditer(text):
        if match.start() != end:
            return None
        key, raw, separator = match.groups()
        pairs.append((key, _ESCAPE.sub(_unescape, raw) if "\\" in raw else raw))
        end = match.end()
        if not separator:
            break
    if end != len(text) and text[end:].strip():
        return None
    return tuple(sorted(pairs))


def _unescape(match: re.Match[str]) -> str:
    char = match.group(1)
    return _UNESCAPED.get(char, "\\" + char)


def _value(raw: str) -> float | None:
    try:  # also "+Inf", "-Inf", "NaN", as the full parser reads them
        return float(raw)
    except ValueError:
        return None


__all__ = ["parse_plain_exposition"]
