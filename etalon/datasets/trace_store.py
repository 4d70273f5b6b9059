"""Where trace files come from: ETALON_TRACES, then the cache, then (online) the public download.

A trace preset names its file by bare name (``sharegpt_8k_filtered_stats_llama2_tokenizer.csv``);
``resolve_trace`` finds it in the folder ``ETALON_TRACES`` names, then in the cache
(``ETALON_CACHE_DIR``, else ``$XDG_CACHE_HOME/etalon``, else ``~/.cache/etalon``, under
``traces/``), and otherwise downloads the public file into the cache, checking its size and
SHA-256. ``ETALON_OFFLINE=1`` never downloads; a missing file is then one line saying where to put
it. Any other path (absolute, or with a folder) is used as given.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from etalon.user_cache import user_cache_dir


class TraceNotFoundError(ValueError):
    """The trace file is not anywhere etalon looks and cannot be downloaded; the message says where to put it."""


@dataclass(frozen=True)
class PublicTrace:
    """A public trace file: where to download it, its size in bytes and its SHA-256."""

    url: str
    size_bytes: int
    sha256: str


_AZURE = "https://raw.githubusercontent.com/Azure/AzurePublicDataset/master/data/"
_VIDUR = "https://raw.githubusercontent.com/microsoft/vidur/main/data/processed_traces/"
PUBLIC_TRACES: dict[str, PublicTrace] = {
    "AzureLLMInferenceTrace_conv.csv": PublicTrace(
        _AZURE + "AzureLLMInferenceTrace_conv.csv", 719188,
        "2f1e5b666d4e3055fdbba98598ce2ec307767b9064e03e2fa46676dbcc7d0bf8"),
    "AzureLLMInferenceTrace_code.csv": PublicTrace(
        _AZURE + "AzureLLMInferenceTrace_code.csv", 320117,
        "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6"),
    "sharegpt_8k_filtered_stats_llama2_tokenizer.csv": PublicTrace(
        _VIDUR + "sharegpt_8k_filtered_stats_llama2_tokenizer.csv", 949600,
        "6d6c296302a853e2669a674a96f269283e60c57e60363bd450588a1066919f9f"),
    "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv": PublicTrace(
        _VIDUR + "arxiv_summarization_stats_llama2_tokenizer_filtered_v2.csv", 884932,
        "9d3580538d915ca75e4aaaa54590b42dbb17abc6d74c8913310cf07c232adcdc"),
    "bwb_stats_llama2_tokenizer_filtered_v2.csv": PublicTrace(
        _VIDUR + "bwb_stats_llama2_tokenizer_filtered_v2.csv", 1123791,
        "389419d2f2e55149b5d6ccfedb881572798d39650436ab86fd61f3c40337a990"),
}
DOWNLOAD_TIMEOUT_S = 30.0


def cache_dir() -> Path:
    """Where downloaded traces are kept."""
    return user_cache_dir() / "traces"


def resolve_trace(path: str | Path) -> Path:
    """The file a trace config names (see the module docstring for the search order)."""
    given = Path(path).expanduser()
    if given.is_file() or given.parent != Path("."):
        return given.resolve()
    name = given.name
    folder = os.environ.get("ETALON_TRACES")
    if folder and (Path(folder).expanduser() / name).is_file():
        return (Path(folder).expanduser() / name).resolve()
    cached = cache_dir() / name
    if cached.is_file():
        return cached
    public = PUBLIC_TRACES.get(name)
    if public is None or os.environ.get("ETALON_OFFLINE") == "1":
        raise TraceNotFoundError(_where_to_put(name, public))
    try:
        return download(public, cached)
    except (OSError, urllib.error.URLError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise TraceNotFoundError(f"{_where_to_put(name, public)} (download failed: {reason})") from None


def _where_to_put(name: str, public: PublicTrace | None) -> str:
    folder = os.environ.get("ETALON_TRACES")
    places = f"into ETALON_TRACES ({folder})" if folder else "into a folder and set ETALON_TRACES to it"
    source = f" Get it from {public.url}" if public else ""
    return f"trace {name}: not found; put it {places} or into {cache_dir()}/.{source}"


def download(public: PublicTrace, target: Path, *, progress: bool = True) -> Path:
    """Fetch ``public`` into ``target`` (via a temporary file, so a failed download leaves
    nothing), with a progress bar on stderr; the size and SHA-256 must match."""
    from tqdm import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    received = 0
    try:
        with urllib.request.urlopen(public.url, timeout=DOWNLOAD_TIMEOUT_S) as response, open(partial, "wb") as out, \
                tqdm(total=public.size_bytes, unit="B", unit_scale=True, desc=f"downloading {target.name}",
                     disable=not progress, file=sys.stderr, leave=False) as bar:
            while chunk := response.read(1 << 16):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
        if received != public.size_bytes or digest.hexdigest() != public.sha256:
            raise TraceNotFoundError(
                f"trace {target.name}: download from {public.url} does not match its checksum "
                f"({received} bytes, sha256 {digest.hexdigest()[:12]}...; expected {public.size_bytes} bytes, "
                f"sha256 {public.sha256[:12]}...); nothing was saved")
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return target


__all__ = ["PUBLIC_TRACES", "PublicTrace", "TraceNotFoundError", "cache_dir", "download", "resolve_trace"]
