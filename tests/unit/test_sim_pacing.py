"""The simulator's precise wait: tokens are never sent early beyond EARLY_NS, and the default
``sleep`` tail costs a fraction of the CPU the ``spin`` tail holds (a client shares the cores)."""

from __future__ import annotations

import asyncio
import re
import time

import pytest

from etalon.sim.config import SimConfig, SimConfigError
from etalon.sim.schedulers import EARLY_NS, PreciseSleeper


def _waits(wait: str, count: int = 150, gap_ns: int = 800_000) -> tuple[list[int], float, float]:
    async def main() -> tuple[list[int], float, float]:
        sleeper = PreciseSleeper(0.001, wait)
        errors = []
        cpu0, wall0 = time.process_time(), time.monotonic()
        target = time.monotonic_ns() + gap_ns
        for _ in range(count):
            await sleeper.until(target)
            errors.append(time.monotonic_ns() - target)
            target += gap_ns
        return errors, time.process_time() - cpu0, time.monotonic() - wall0

    return asyncio.run(main())


def test_sleep_wait_is_never_early_and_leaves_the_core_free() -> None:
    errors, cpu_s, wall_s = _waits("sleep")
    assert min(errors) >= -EARLY_NS - 1_000  # bounded early emission, as with spinning
    # the tail is slept: well under a core (a spin holds it for the whole run)
    assert cpu_s < 0.5 * wall_s, (cpu_s, wall_s)


def test_spin_wait_is_never_early() -> None:
    errors, _, _ = _waits("spin", count=50)
    assert min(errors) >= -EARLY_NS - 1_000


def test_an_earlier_deadline_interrupts_a_sleep_wait() -> None:
    async def main() -> float:
        sleeper = PreciseSleeper(0.001, "sleep")
        started = time.monotonic()
        waiting = asyncio.ensure_future(sleeper.until(time.monotonic_ns() + 5_000_000_000))
        await asyncio.sleep(0.01)
        sleeper.interrupt()
        await asyncio.wait_for(waiting, 1.0)
        return time.monotonic() - started

    assert asyncio.run(main()) < 1.0


@pytest.mark.parametrize(("field", "value", "message"), [
    ("precise_wait", "busy", "sim.precise_wait='busy' is not one of sleep, spin"),
    ("spin_wait_s", -0.001, "sim.spin_wait_s=-0.001 must be within [0, 0.1]"),
    ("spin_wait_s", 0.5, "sim.spin_wait_s=0.5 must be within [0, 0.1]"),
])
def test_bad_wait_settings_are_rejected(field: str, value: object, message: str) -> None:
    with pytest.raises(SimConfigError, match=re.escape(message)):
        SimConfig(**{field: value})
