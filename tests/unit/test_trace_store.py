"""Trace files resolve from ETALON_TRACES, then the cache, then a checksummed download (here from a
127.0.0.1 server: tests never download anything)."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from etalon.datasets import trace_store
from etalon.datasets.trace_store import PublicTrace, TraceNotFoundError, download, resolve_trace

CSV = b"num_prefill_tokens,num_decode_tokens\n" + b"".join(b"%d,%d\n" % (100 + i, 10 + i) for i in range(5000))


@pytest.fixture
def server(tmp_path: Path):
    root = tmp_path / "www"
    root.mkdir()
    (root / "trace.csv").write_bytes(CSV)

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):  # keep the test output clean
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    traces, cache = tmp_path / "traces", tmp_path / "cache"
    traces.mkdir()
    monkeypatch.setenv("ETALON_TRACES", str(traces))
    monkeypatch.setenv("ETALON_CACHE_DIR", str(cache))
    monkeypatch.delenv("ETALON_OFFLINE", raising=False)
    return traces, cache / "traces"


def _public(url: str, data: bytes = CSV) -> PublicTrace:
    return PublicTrace(url, len(data), hashlib.sha256(data).hexdigest())


def test_download_checks_size_and_checksum_and_lands_in_the_cache(server: str, places, monkeypatch) -> None:
    _, cache = places
    monkeypatch.setitem(trace_store.PUBLIC_TRACES, "local_trace.csv", _public(f"{server}/trace.csv"))
    path = resolve_trace("local_trace.csv")
    assert path == cache / "local_trace.csv"
    assert path.read_bytes() == CSV
    assert [p.name for p in cache.iterdir()] == ["local_trace.csv"]  # no partial file left


def test_a_download_that_does_not_match_its_checksum_saves_nothing(server: str, places) -> None:
    _, cache = places
    wrong = PublicTrace(f"{server}/trace.csv", len(CSV), "0" * 64)
    with pytest.raises(TraceNotFoundError, match="does not match its checksum"):
        download(wrong, cache / "x.csv", progress=False)
    assert list(cache.iterdir()) == []


def test_etalon_traces_comes_first_then_the_cache(places, monkeypatch) -> None:
    traces, cache = places
    cache.mkdir(parents=True)
    (cache / "t.csv").write_bytes(b"cached")
    monkeypatch.setitem(trace_store.PUBLIC_TRACES, "t.csv", _public("http://127.0.0.1:9/never"))
    assert resolve_trace("t.csv") == cache / "t.csv"
    (traces / "t.csv").write_bytes(b"mine")
    assert resolve_trace("t.csv") == (traces / "t.csv").resolve()


def test_offline_with_no_file_says_where_to_put_it(places, monkeypatch) -> None:
    traces, cache = places
    monkeypatch.setenv("ETALON_OFFLINE", "1")
    name = "sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
    with pytest.raises(TraceNotFoundError) as err:
        resolve_trace(name)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"trace {name}: not found; put it into ETALON_TRACES ({traces}) or into {cache}/.")
    assert trace_store.PUBLIC_TRACES[name].url in message


def test_an_unreachable_download_is_the_same_one_line(places, monkeypatch) -> None:
    import socket

    with socket.socket() as s:  # a port the OS just handed out, nobody listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(trace_store.PUBLIC_TRACES, "gone.csv", _public(f"http://127.0.0.1:{port}/gone.csv"))
    with pytest.raises(TraceNotFoundError, match=r"^trace gone.csv: not found; put it .* \(download failed: "):
        resolve_trace("gone.csv")


def test_a_path_with_a_folder_is_used_as_given(tmp_path: Path, places) -> None:
    assert resolve_trace(tmp_path / "nowhere" / "x.csv") == (tmp_path / "nowhere" / "x.csv").resolve()
