"""Prometheus text exposition (format 0.0.4) -> samples, for the plain lines every engine writes.

``prometheus_client``'s parser builds a metric family object per ``# TYPE`` block and parses each
line character by character: ~18 ms for the simulator's 725-line exposition, paid for every scrape
of a run at its end. This reads the common shape (``name{label="value",...} value [timestamp]``),
reading each series' name and labels once per process (they repeat in every scrape): 0.8 ms for
that exposition. It declines (returns None) on anything else, so the caller can hand the text to
the full parser, which also reports malformed text.
"""

from __future__ import annotations

import re

from etalon.core.server_metrics import Labels, Samples

_HEAD = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^{}\n]*)\})?")
_LABEL = re.compile(r'[ \t]*([a-zA-Z_][a-zA-Z0-9_]*)[ \t]*=[ \t]*"((?:[^"\\\n]|\\.)*)"[ \t]*(,|$)')
_ESCAPE = re.compile(r"\\(.)")
_UNESCAPED = {"\\": "\\", '"': '"', "n": "\n"}
# A series' name and labels, by the text before its value: the same few hundred series come back
# in every scrape of a run, so each is read once.
_HEADS: dict[str, tuple[str, Labels] | None] = {}
_MAX_HEADS = 1 << 16


def parse_plain_exposition(text: str) -> Samples | None:
    """Sample name -> [(sorted (label, value) pairs, value)] in text order, as
    ``prometheus_client.parser.text_string_to_metric_families`` gives them (histogram
    ``_bucket``/``_sum``/``_count`` and counter ``_total`` names as written, ``le`` as written);
    None when a line is not of the plain shape (the full parser then decides)."""
    samples: Samples = {}
    for line in text.split("\n"):
        if not line or line[0] == "#" or line.isspace():
            continue
        brace = line.find("}")
        split = brace + 1 if brace != -1 else _first_blank(line)
        head, rest = line[:split], line[split:].split()
        series = _HEADS.get(head) if head in _HEADS else _read_head(head)
        if series is None or not rest or len(rest) > 2 or not rest[0] or not line[split].isspace():
            return None
        value = _value(rest[0])
        if value is None or (len(rest) == 2 and not _is_timestamp(rest[1])):
            return None
        samples.setdefault(series[0], []).append((series[1], value))
    return samples


def _first_blank(line: str) -> int:
    for i, char in enumerate(line):
        if char in " \t":
            return i
    return len(line)


def _is_timestamp(raw: str) -> bool:
    return raw.lstrip("-").isdigit() and raw.isascii()


def _read_head(head: str) -> tuple[str, Labels] | None:
    match = _HEAD.fullmatch(head)
    series = None
    if match is not None:
        labels = _labels(match.group(2)) if match.group(2) else ()
        series = (match.group(1), labels) if labels is not None else None
    if len(_HEADS) >= _MAX_HEADS:
        _HEADS.clear()
    _HEADS[head] = series
    return series


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
