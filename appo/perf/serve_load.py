"""The ``serve`` section of ``appo perf``: a bounded loopback load test of ``appo serve``.

:func:`serve_figures` starts ``appo serve MODEL`` in a subprocess on ``127.0.0.1`` and, for each number of
concurrent clients ``c`` (1/8/32) with streaming off and on, runs ``c`` client threads that each send
``requests_per_client`` ``/v1/completions`` requests back to back (the same prompt, ``max_tokens``
tokens, greedy). One repeat's figure is requests/s (requests done / wall time); the record's ``details``
carry p50/p99 latency over every request of every repeat (whole response; for streams also the time to
the first chunk), completion tokens/s, and the errors seen (a failed request is counted, not retried).

Baseline hook: ``baseline_url`` names another OpenAI-compatible server already running with the same
model (``vllm serve`` once the vLLM engine lands, or another ``appo serve``); the same load then runs
against it, interleaved repeat by repeat, and the figure's speedup is ours / baseline requests/s. Without
it the figure has no baseline. Everything is bounded: ``c * requests_per_client`` requests per repeat,
each with a 120 s client timeout, and the server is stopped at the end.
"""

from __future__ import annotations

import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from appo.perf.harness import Contender, figure, interleave

PROMPT = "Question: what is 12 times 7? Think step by step, then answer.\nAnswer:"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model_path: str, threads: int, timeout_s: float = 180.0) -> tuple[subprocess.Popen, str]:
    """``appo serve MODEL`` on a free 127.0.0.1 port; returns (process, ``http://127.0.0.1:PORT/v1``)."""
    import httpx

    port = _free_port()
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "appo", "serve", model_path, "--name", "bench", "--host",
                             "127.0.0.1", "--port", str(port), "--device", "cpu", "--num-threads", str(threads),
                             "--log-level", "warning"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"appo serve exited with {proc.returncode}: {proc.stderr.read()[-1000:]}")
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return proc, f"http://127.0.0.1:{port}/v1"
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"appo serve did not answer /health within {timeout_s:g} s")


def run_load(url: str, model: str, clients: int, requests_per_client: int, max_tokens: int, stream: bool) -> dict:
    """One load run: ``clients`` threads x ``requests_per_client`` requests; wall time, latencies, tokens."""
    import httpx

    latencies, first_chunk, tokens, errors = [], [], [], []
    lock = threading.Lock()
    body = {"model": model, "prompt": PROMPT, "max_tokens": max_tokens, "temperature": 0, "stream": stream}
    if stream:
        body["stream_options"] = {"include_usage": True}

    def client() -> None:
        with httpx.Client(timeout=120) as c:
            for _ in range(requests_per_client):
                t0 = time.perf_counter()
                try:
                    if stream:
                        first, n = None, 0
                        with c.stream("POST", url + "/completions", json=body) as r:
                            r.raise_for_status()
                            for line in r.iter_lines():
                                if first is None and line.startswith("data: "):
                                    first = time.perf_counter() - t0
                                if '"usage"' in line and '"completion_tokens"' in line:
                                    import json

                                    n = json.loads(line[6:])["usage"]["completion_tokens"]
                    else:
                        r = c.post(url + "/completions", json=body)
                        r.raise_for_status()
                        first, n = None, r.json()["usage"]["completion_tokens"]
                except httpx.HTTPError as exc:
                    with lock:
                        errors.append(f"{type(exc).__name__}: {exc}"[:200])
                    continue
                dt = time.perf_counter() - t0
                with lock:
                    latencies.append(dt)
                    tokens.append(n)
                    if first is not None:
                        first_chunk.append(first)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    return {"wall_s": wall, "latencies": latencies, "first_chunk": first_chunk, "tokens": sum(tokens),
            "errors": errors}


def _pct(xs: list[float], q: float) -> float | None:
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def serve_figures(model_name: str, model_path: str, threads: int, clients: tuple[int, ...] = (1, 8, 32),
                  requests_per_client: int = 4, max_tokens: int = 32, repeats: int = 3,
                  baseline_url: str | None = None, baseline_model: str | None = None) -> list[dict]:
    """Requests/s of ``appo serve`` at each client count, streaming off and on (module docstring)."""
    proc, url = start_server(model_path, threads)
    figs = []
    try:
        for stream in (False, True):
            for c in clients:
                runs: dict[str, list[dict]] = {"ours": [], "base": []}

                def side(key, target, model):
                    def run(_repeat: int) -> float:
                        out = run_load(target, model, c, requests_per_client, max_tokens, stream)
                        runs[key].append(out)
                        return len(out["latencies"]) / out["wall_s"]
                    return run

                ours = Contender("appo serve", side("ours", url, "bench"))
                base = (Contender(f"endpoint {baseline_url}", side("base", baseline_url, baseline_model or "bench"))
                        if baseline_url else None)
                interleave(ours, base, repeats)
                details = {}
                for key in ("ours", "base"):
                    done = runs[key][1:]  # the warm-up run is not recorded
                    if not done:
                        continue
                    lat = [x for r in done for x in r["latencies"]]
                    ttft = [x for r in done for x in r["first_chunk"]]
                    details[key] = {
                        "p50_latency_s": _pct(lat, 0.5), "p99_latency_s": _pct(lat, 0.99),
                        "p50_first_chunk_s": _pct(ttft, 0.5), "p99_first_chunk_s": _pct(ttft, 0.99),
                        "completion_tokens_per_s": statistics.median(r["tokens"] / r["wall_s"] for r in done),
                        "requests": sum(len(r["latencies"]) for r in done),
                        "errors": [e for r in done for e in r["errors"]][:5],
                        "error_count": sum(len(r["errors"]) for r in done)}
                name = f"{model_name} t{threads} c{c} {'stream' if stream else 'whole'}"
                figs.append(figure("serve", name, "req/s", ours, base, higher_is_better=True,
                                   target_text="- (vs --serve-baseline-url)",
                                   details={"clients": c, "requests_per_client": requests_per_client,
                                            "max_tokens": max_tokens, "stream": stream, **details}))
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return figs


def format_latencies(fig: dict) -> str:
    """One line of a serve figure's latencies (p50/p99 in ms) for the printed table."""
    d = fig.get("details", {}).get("ours") or {}

    def ms(x):
        return "-" if x is None else f"{x * 1000:.0f}"

    line = (f"    latency p50 {ms(d.get('p50_latency_s'))} ms, p99 {ms(d.get('p99_latency_s'))} ms; "
            f"{d.get('completion_tokens_per_s', 0):.0f} completion tok/s; errors {d.get('error_count', 0)}")
    if d.get("p50_first_chunk_s") is not None:
        line += f"; first chunk p50 {ms(d['p50_first_chunk_s'])} ms, p99 {ms(d['p99_first_chunk_s'])} ms"
    return line
