"""Telling reuse: when and against which server a cached probe or profile was measured."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from etalon.stages.base import StageContext


def measured_against(ctx: StageContext) -> dict[str, str]:
    """When and against which server (as observed) something was measured: told when it is reused."""
    from datetime import datetime, timezone

    from etalon.clients.identity import describe_server

    server = describe_server(getattr(ctx.endpoint, "server_identity", None), getattr(ctx.endpoint, "base_url", "?"))
    return {"measured_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "server": server}


def tell_reuse(what: str, metas: list[dict[str, Any]], cache_dir: Path) -> None:
    """Print "reused N <what> measured at <time> against <server>" for cached results."""
    if not metas:
        return
    times = sorted(str(m.get("measured_at", "?")) for m in metas)
    when = times[0] if times[0] == times[-1] else f"{times[0]} .. {times[-1]}"
    servers = sorted({str(m.get("server", "?")) for m in metas})
    print(f"etalon: reused {len(metas)} {what} measured at {when} against {'; '.join(servers)} "
          f"(delete {cache_dir} to measure again)", flush=True)


__all__ = ["measured_against", "tell_reuse"]
