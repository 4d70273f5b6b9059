"""Poll the endpoint's Prometheus ``/metrics`` from the driver while a run is going on."""

from __future__ import annotations

import logging
import threading
import time
import urllib.error
import urllib.request
from typing import Any

from etalon.core.server_metrics import Labels, Samples, Scrape

log = logging.getLogger("etalon")
SCRAPE_TIMEOUT_S = 2.0
MAX_BODY_BYTES = 16 << 20
# URLs already warned about in this process: a missing /metrics is said once, not per probe.
_WARNED: set[str] = set()


class ScrapeError(RuntimeError):
    """``/metrics`` is absent, unreachable or not Prometheus text."""


def parse_metrics_text(text: str) -> Samples:
    """Prometheus text exposition -> sample name -> [(sorted labels, value)] (histogram
    ``_bucket``/``_sum``/``_count`` samples kept): plain expositions by the fast reader, anything
    else by ``prometheus_client``'s own parser, which also rejects malformed text."""
    from etalon.core.prometheus_text import parse_plain_exposition

    plain = parse_plain_exposition(text)
    if plain is not None:
        return plain
    from prometheus_client.parser import text_string_to_metric_families

    samples: Samples = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels: Labels = tuple(sorted((str(k), str(v)) for k, v in sample.labels.items()))
                samples.setdefault(sample.name, []).append((labels, float(sample.value)))
    except (ValueError, TypeError, IndexError, KeyError) as exc:
        raise ScrapeError(f"not Prometheus text ({type(exc).__name__}: {exc})") from None
    return samples


def fetch_metrics(url: str, headers: dict[str, str] | None = None) -> Samples:
    return parse_metrics_text(fetch_text(url, headers))


def fetch_text(url: str, headers: dict[str, str] | None = None) -> str:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=SCRAPE_TIMEOUT_S) as answer:  # noqa: S310 - the endpoint
            body = answer.read(MAX_BODY_BYTES)
    except urllib.error.HTTPError as exc:
        raise ScrapeError(f"HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise ScrapeError(str(getattr(exc, "reason", exc))) from None
    return body.decode("utf-8", errors="replace")


class MetricsScraper:
    """Scrapes ``url`` every ``interval_s`` on a daemon thread; ``start`` and ``stop`` each take
    one scrape themselves, so the run window is bracketed. ``parse_live``: parse each text on the
    scraper thread as it arrives (a long run does not wait at its end; right when the load actors
    are other processes); otherwise keep the text and parse at ``stop``, so parsing (~0.1 s for a
    large exposition) never competes for the interpreter with an in-process load driver. A
    failure warns once and ends scraping for this run; the run itself goes on."""

    def __init__(self, url: str, interval_s: float = 1.0, headers: dict[str, str] | None = None,
                 parse_live: bool = True) -> None:
        if interval_s <= 0:
            raise ValueError(f"server metrics interval must be > 0 s, got {interval_s}")
        self.url = url
        self.interval_s = interval_s
        self.headers = dict(headers or {})
        self.scrapes: list[Scrape] = []
        self.parse_live = parse_live
        self._texts: list[tuple[int, str]] = []
        self.failed: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _scrape_once(self) -> bool:
        if self.failed is not None:
            return False
        at_ns = time.time_ns()
        try:
            text = fetch_text(self.url, self.headers)
            if self.parse_live:
                self.scrapes.append(Scrape(at_ns, parse_metrics_text(text)))
            else:
                self._texts.append((at_ns, text))
        except ScrapeError as exc:
            self._fail(str(exc))
            return False
        return True

    def _fail(self, why: str) -> None:
        self.failed = why
        if self.url not in _WARNED:
            _WARNED.add(self.url)
            log.warning("server metrics: GET %s failed (%s); this run goes on without server metrics",
                        self.url, why)

    def start(self) -> MetricsScraper:
        if self._scrape_once():
            self._thread = threading.Thread(target=self._loop, name="etalon-metrics-scraper", daemon=True)
            self._thread.start()
        return self

    def _loop(self) -> None:
        next_at = time.monotonic() + self.interval_s
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            self._scrape_once()
            next_at += self.interval_s

    def stop(self) -> list[Scrape]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=SCRAPE_TIMEOUT_S + self.interval_s)
            self._scrape_once()
        texts, self._texts = self._texts, []
        try:
            self.scrapes += [Scrape(at_ns, parse_metrics_text(text)) for at_ns, text in texts]
        except ScrapeError as exc:
            self._fail(str(exc))
            self.scrapes = []
        return self.scrapes

    def __enter__(self) -> MetricsScraper:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


__all__ = ["MetricsScraper", "ScrapeError", "fetch_metrics", "fetch_text", "parse_metrics_text"]
