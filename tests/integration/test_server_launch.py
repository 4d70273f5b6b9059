"""Server templates: the command each renders, one launch path for all of them (sim included),
every start-up failure as one clear error, and each engine's /metrics names mapped."""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from etalon.config import ServerConfig
from etalon.core.server_metrics import common_series, Scrape, window_quantiles
from etalon.loadgen.scrape import MetricsScraper, parse_metrics_text
from etalon.runner.launch import LaunchedServer, render_command
from etalon.runner.parallel import compose_config
from etalon.runner.server import ServerStartError
from tests.integration.etalon_cli import PROJECT_DIR, cli_env
from tests.integration.threaded_server import ThreadedServer

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "metrics"


@pytest.mark.parametrize(("template", "expected"), [
    ("vllm", ["vllm", "serve", "--served-model-name", "--max-model-len", "--tensor-parallel-size"]),
    ("sglang", ["sglang.launch_server", "--model-path", "--context-length", "--tp-size", "--enable-metrics"]),
    ("tgi", ["text-generation-launcher", "--model-id", "--max-total-tokens", "--num-shard"]),
    ("llamacpp", ["llama-server", "--model", "--ctx-size", "--parallel", "--metrics"]),
    ("llamacpp_python", ["llama_cpp.server", "--model_alias", "--n_ctx", "--interrupt_requests"]),
    ("sim", ["etalon.sim", "serve", "--config-json"]),
])
def test_cfg_job_shows_every_templates_command(template: str, expected: list[str]) -> None:
    out = subprocess.run([sys.executable, "-m", "etalon.main", "--cfg", "job", f"server={template}"],
                         cwd=PROJECT_DIR, env=cli_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    shown = out.stdout[out.stdout.index("server:"):]
    for part in expected:
        assert f"- {part}" in shown or f"- ${{" in shown and part in shown, (part, shown[:1500])


def test_templates_render_engine_args_and_drop_unset_flags() -> None:
    cfg = compose_config(["server=vllm", "server.args.max_num_seqs=64", "server.args.enable_prefix_caching=false",
                          "server.args.tensor_parallel_size=2", "model.name=tiny"])
    cmd = render_command(cfg.server)
    assert cmd[:3] == ["vllm", "serve", "tiny"]
    assert cmd[cmd.index("--tensor-parallel-size") + 1] == "2" and "--max-num-seqs=64" in cmd
    assert "--no-enable-prefix-caching" in cmd and "" not in cmd
    assert not any(c.startswith("--max-num-batched-tokens") for c in cmd)  # null: vLLM's default
    assert cmd[cmd.index("--port") + 1] == str(cfg.server.port)  # a free port was picked on load
    assert cfg.server.gpus == 2
    sglang = render_command(compose_config(["server=sglang", "server.args.enable_prefix_caching=false"]).server)
    assert "--disable-radix-cache" in sglang and "--enable-metrics" in sglang


def _sim_server(**changes: object) -> ServerConfig:
    cfg = compose_config(["server=sim", "sim=tiny_engine"])
    assert cfg.server is not None
    return dataclasses.replace(cfg.server, **changes)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sim_template_launches_and_stops_its_whole_process_group(tmp_path: Path) -> None:
    server = LaunchedServer(_sim_server(), tmp_path / "server.log")
    url = server.start()
    assert server.process is not None
    pgid = server.process.pid
    assert os.getpgid(pgid) == pgid  # its own group: Ctrl-C in a terminal does not reach it
    with urllib.request.urlopen(url + "/models", timeout=5) as answer:
        assert b"etalon-sim" in answer.read()
    server.stop()
    assert not _group_alive(pgid)
    log = (tmp_path / "server.log").read_text()
    assert log.startswith("# etalon: launching sim:") and "etalon-sim listening on" in log
    server.stop()  # twice is fine


def test_a_port_that_already_answers_is_refused(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServerStartError, match=f"server.port: {port} on 127.0.0.1 already answers"):
            LaunchedServer(_sim_server(port=port), tmp_path / "server.log").start()


def test_engine_not_installed_names_the_command_and_package(tmp_path: Path) -> None:
    cfg = compose_config(["server=tgi"])
    assert cfg.server is not None
    with pytest.raises(ServerStartError, match="'text-generation-launcher' is not installed .* text-generation-inference"):
        LaunchedServer(cfg.server, tmp_path / "server.log").start()


def test_exit_during_start_up_gives_code_and_last_log_lines(tmp_path: Path) -> None:
    script = "import sys\nfor i in range(30): print('line', i)\nsys.exit(3)"
    server = LaunchedServer(_sim_server(command=[sys.executable, "-c", script]), tmp_path / "server.log")
    with pytest.raises(ServerStartError, match="exited with code 3 during start-up") as info:
        server.start()
    tail = info.value.detail.splitlines()
    assert len(tail) == 20 and tail[-1] == "line 29" and tail[0] == "line 10"


def test_start_up_timeout_stops_the_server(tmp_path: Path) -> None:
    script = "import time\nprint('loading', flush=True)\ntime.sleep(60)"
    server = LaunchedServer(_sim_server(command=[sys.executable, "-c", script], startup_timeout_s=1.0,
                                        stop_grace_s=1.0), tmp_path / "server.log")
    with pytest.raises(ServerStartError, match="not ready after 1 s") as info:
        server.start()
    assert "loading" in info.value.detail and server.process is None


def test_stop_kills_a_server_that_ignores_its_stop_signal(tmp_path: Path) -> None:
    # Ready at once (a tiny HTTP server), but SIGTERM is ignored: the group gets SIGKILL after the grace.
    script = ("import signal, http.server, sys\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
              "class H(http.server.BaseHTTPRequestHandler):\n def do_GET(self):\n  self.send_response(200); self.end_headers()\n"
              "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()")
    base = _sim_server(stop_grace_s=0.5)
    server = LaunchedServer(dataclasses.replace(base, command=[sys.executable, "-c", script, str(base.port)]),
                            tmp_path / "server.log")
    server.start()
    pgid = server.process.pid  # type: ignore[union-attr]
    server.stop()
    assert not _group_alive(pgid)


@pytest.mark.parametrize(("engine", "running", "waiting", "kv"), [
    ("vllm", 3.0, 2.0, 0.25), ("sglang", 7.0, 4.0, 0.28), ("tgi", 5.0, 1.0, None), ("llamacpp", 2.0, 6.0, 0.125),
])
def test_recorded_metrics_of_each_engine_map_onto_common_series(engine: str, running: float, waiting: float,
                                                                kv: float | None) -> None:
    samples = parse_metrics_text((FIXTURES / f"{engine}.txt").read_text())
    s = common_series([Scrape(0, samples)])
    assert s["running"][0] == running and s["waiting"][0] == waiting
    assert (s["kv_cache_usage"][0] == pytest.approx(kv)) if kv is not None else s["kv_cache_usage"][0] != s["kv_cache_usage"][0]


def test_recorded_histograms_give_server_quantiles() -> None:
    empty: dict = {}
    vllm = window_quantiles(empty, parse_metrics_text((FIXTURES / "vllm.txt").read_text()))
    assert vllm["server_ttft_p50_s"] == pytest.approx(0.1) and vllm["server_itl_p50_s"] == pytest.approx(0.01)
    sglang = window_quantiles(empty, parse_metrics_text((FIXTURES / "sglang.txt").read_text()))
    assert sglang["server_ttft_p50_s"] == pytest.approx(0.2) and sglang["server_e2e_p50_s"] == pytest.approx(3.0)
    tgi = window_quantiles(empty, parse_metrics_text((FIXTURES / "tgi.txt").read_text()))
    assert tgi["server_e2e_p50_s"] == pytest.approx(1.25) and tgi["server_itl_p50_s"] == pytest.approx(0.015)
    assert "server_ttft_p50_s" not in tgi  # TGI exports no TTFT histogram


class _BadMetrics(ThreadedServer):
    def add_routes(self, app: web.Application) -> None:
        async def garbage(_request: web.Request) -> web.Response:
            return web.Response(text="this is { not prometheus\n")

        app.router.add_get("/metrics", garbage)


def test_unparsable_or_absent_metrics_warn_once_and_scrape_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with _BadMetrics() as server:
        scraper = MetricsScraper(f"http://127.0.0.1:{server.port}/metrics", 0.05).start()
        assert scraper.stop() == [] and "not Prometheus text" in (scraper.failed or "")
        absent = MetricsScraper(f"http://127.0.0.1:{server.port}/nothing", 0.05).start()
        assert absent.stop() == [] and "HTTP 404" in (absent.failed or "")
    assert sum("server metrics: GET" in r.message for r in caplog.records) == 2


def _job(label: str, overrides: list[str]):  # noqa: ANN202 - a SearchJob stand-in with what place_servers reads
    from types import SimpleNamespace

    return SimpleNamespace(config=SimpleNamespace(label=label), cfg=compose_config(overrides), gpus=0,
                           serial_key=None, lock_scope="x")


def test_servers_get_tp_x_pp_gpus_or_take_turns_on_a_host_without_gpus() -> None:
    from etalon.runner.parallel import place_servers
    from etalon.stages.base import StageError

    vllm = _job("tp2", ["server=vllm", "server.args.tensor_parallel_size=2"])
    sim = _job("sim", ["server=sim"])
    place_servers([vllm, sim], cluster_gpus=4, scope="s")
    assert vllm.gpus == 2 and vllm.serial_key is None  # Ray places it on 2 GPUs of its own
    assert sim.gpus == 0 and sim.serial_key is not None and sim.serial_key.startswith("launch@")
    big = _job("tp4pp2", ["server=vllm", "server.args.tensor_parallel_size=4", "server.args.pipeline_parallel_size=2"])
    with pytest.raises(StageError, match="= 8 GPUs per server, but Ray sees 4"):
        place_servers([big], cluster_gpus=4, scope="s")
    with pytest.raises(StageError, match="but Ray sees no GPU"):
        place_servers([vllm], cluster_gpus=0, scope="s")
    cpu = _job("cpu", ["server=vllm"])
    place_servers([cpu, _job("cpu2", ["server=vllm"])], cluster_gpus=0, scope="s")
    assert cpu.gpus == 0 and cpu.serial_key == f"launch@{socket.gethostname()}#s"


def test_a_search_time_limit_becomes_one_deadline() -> None:
    import time

    from etalon.stages.capacity_search import SearchSettings

    assert not SearchSettings(time_limit_s=60).out_of_time()  # relative until a search starts
    assert SearchSettings(deadline_unix_s=time.time() - 1).out_of_time()
    assert not SearchSettings(deadline_unix_s=time.time() + 60).out_of_time()


def test_the_twin_search_drops_the_real_servers_overrides(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from etalon.config import TrackingConfig
    from etalon.runner.parallel import LocalSearchRunner
    from etalon.stages.calibrate import twin_overrides
    from etalon.stages.capacity_parallel import SearchConfig

    real = ["server=vllm", "server.args.model_path=/models/tiny", "server.args.max_num_seqs=8", "model.name=tiny"]
    sim = {"scheduler": "chunked", "max_num_seqs": 8, "max_num_batched_tokens": 2048, "kv_cache_tokens": 10000,
           "latency": {"step_overhead_s": 0.01, "per_prefill_token_s": 1e-4, "per_decode_seq_s": 2e-3,
                       "per_context_token_s": 0.0}}
    ctx = SimpleNamespace(cache_dir=tmp_path, cfg=SimpleNamespace(tracking=TrackingConfig(enabled=False)),
                          stage_dir=tmp_path, run_dir=tmp_path, results={}, tracker=SimpleNamespace(run_id=None))
    runner = LocalSearchRunner(base_overrides=real, drop_overrides=["server"])
    job = runner._job(ctx, SearchConfig("twin", tuple(twin_overrides(sim))), {})
    assert job.cfg.server is not None and job.cfg.server.name == "sim" and job.cfg.model.name == "tiny"
    assert job.cfg.sim["max_num_seqs"] == 8 and job.cfg.sim["latency"]["per_decode_seq_s"] == 2e-3
