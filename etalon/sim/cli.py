"""``python -m etalon.sim serve|calibrate``: run the simulator standalone or fit a preset."""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from etalon.sim.config import STANDALONE_MODEL, SimConfig, SimConfigError, load_sim_config

LISTENING_PREFIX = "etalon-sim listening on "


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m etalon.sim")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the simulated OpenAI-compatible server")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument("--preset", help="name of a conf/sim/*.yaml preset")
    source.add_argument("--config", help="path of a sim config YAML (a resolved `sim` node)")
    source.add_argument("--config-json", help="a resolved `sim` node as one JSON argument (server=sim)")
    serve.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a sim config value, e.g. --set latency.tbt_s=0.01")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=0, help="0 lets the OS choose")
    serve.add_argument("--model-name", default=STANDALONE_MODEL["name"])
    serve.add_argument("--tokenizer", default=STANDALONE_MODEL["tokenizer"],
                       help="tokenizer for ${model.tokenizer}; 'none' counts words")
    serve.add_argument("--context-tokens", type=int, default=STANDALONE_MODEL["context_tokens"])
    calibrate = commands.add_parser("calibrate", help="fit latency coefficients of a server")
    calibrate.add_argument("--base-url", required=True, help="e.g. http://127.0.0.1:8000/v1")
    calibrate.add_argument("--model", required=True)
    calibrate.add_argument("--out", required=True, help="preset YAML to write")
    calibrate.add_argument("--api-key-env", default=None,
                           help="name of the environment variable holding the API key")
    calibrate.add_argument("--prompt-tokens", default="128,256,512,1024,2048",
                           help="comma-separated prompt lengths of the prefill profile")
    calibrate.add_argument("--batch-sizes", default="1,4,16",
                           help="comma-separated concurrencies of the decode profile")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "calibrate":
        from etalon.sim.calibrate import run_calibration

        return run_calibration(args)
    tokenizer = None if args.tokenizer.lower() in ("none", "null") else args.tokenizer
    model = {"name": args.model_name, "tokenizer": tokenizer, "context_tokens": args.context_tokens}
    try:
        if args.config_json is not None:
            config = _config_from_json(args.config_json, args.set)
        else:
            config = load_sim_config(args.preset, args.config, args.set, model)
    except SimConfigError as exc:
        print(f"etalon-sim: {exc}", file=sys.stderr)
        return 2
    _install_uvloop()
    asyncio.run(serve(config, args.host, args.port))
    return 0


def _config_from_json(text: str, overrides: list[str]) -> SimConfig:
    import json

    from omegaconf import OmegaConf

    from etalon.sim.config import sim_config_from_dict

    try:
        values = json.loads(text)
    except ValueError as exc:
        raise SimConfigError(f"--config-json is not valid JSON: {exc}") from None
    if not isinstance(values, dict):
        raise SimConfigError("--config-json must be a JSON object (a resolved sim config)")
    node = OmegaConf.create(values)
    for item in overrides:
        if "=" not in item:
            raise SimConfigError(f"--set {item!r} must look like key=value")
        node.merge_with(OmegaConf.from_dotlist([item]))
    plain = OmegaConf.to_container(node, resolve=True)
    assert isinstance(plain, dict)
    return sim_config_from_dict({str(k): v for k, v in plain.items()})


def _install_uvloop() -> None:
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# Linux lets a sleeping thread wake up to its "timer slack" late (50 us by default) so wakeups
# can be batched; the simulator's token pacing asks for 1 us (prctl PR_SET_TIMERSLACK).
TIMER_SLACK_NS = 1_000
_PR_SET_TIMERSLACK = 29


def _tighten_timer_slack() -> bool:
    """Set this thread's timer slack to TIMER_SLACK_NS; False where the OS has no such knob."""
    if not sys.platform.startswith("linux"):
        return False
    import ctypes

    try:
        return ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_TIMERSLACK, TIMER_SLACK_NS, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


async def serve(config: SimConfig, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT; the first stdout line announces the bound address."""
    from aiohttp import web

    from etalon.sim.app import SimServer

    _tighten_timer_slack()
    runner = web.AppRunner(SimServer(config).make_app(), access_log=None)
    await runner.setup()
    # A deep accept backlog: hundreds of clients connecting at once must not overflow the listen
    # queue (the default 128 does, and each dropped SYN costs the client a 1 s retransmit).
    site = web.TCPSite(runner, host, port, backlog=4096)
    await site.start()
    bound_port = runner.addresses[0][1]
    print(f"{LISTENING_PREFIX}http://{host}:{bound_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
