"""The terminal summary's numbers: aligned, separated, digits that suit their size."""

from __future__ import annotations

from etalon.report.terminal import WIDTH, _num, format_header


def test_numbers_have_digits_for_their_size_and_never_run_together() -> None:
    assert _num(1e-06) == "        0"  # 1 ns shown in ms: zero, not 1e-06
    assert _num(0.9286) == "    0.929"
    assert _num(57.883) == "    57.88"
    assert _num(595.23) == "    595.2"
    assert _num(2054.4) == "    2,054"
    assert _num(123456789.0) == " 1.23e+08"
    assert _num(None) == "        -"
    assert _num(float("nan")) == "        -"
    cells = "".join(_num(v) for v in (9_999_999.0, 1_234_567.0, 0.5))
    assert cells.split() == ["9,999,999", "1,234,567", "0.500"]


def test_the_header_packs_pairs_into_lines_that_fit() -> None:
    lines = format_header([("endpoint", "sim http://127.0.0.1:1234/v1"), ("model", "m"), ("workload", "w" * 120)])
    assert lines[0] == "endpoint: sim http://127.0.0.1:1234/v1 | model: m"
    assert lines[1].startswith("workload: www") and lines[1].endswith("...")
    assert lines[-1] == "=" * WIDTH
    assert all(len(line) <= WIDTH for line in lines)
