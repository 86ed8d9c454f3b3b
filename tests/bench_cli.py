"""Benchmark of the `rk` command: `rk --help` latency (target < 1.5 s: no litellm import on that path), and
the quickstart's first run against its rerun from the cache, measured side by side in one run.

    .venv/bin/python tests/bench_cli.py

Exits non-zero when `rk --help` misses its target or the rerun makes model calls.
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RK = str(Path(sys.executable).parent / "rk")


def wall(cmd, cwd=None, env=None) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t


def main():
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_MODE": "PRODUCTION"}
    help_s = statistics.median(wall([RK, "--help"]) for _ in range(7))
    bare_s = statistics.median(wall([sys.executable, "-c", "pass"]) for _ in range(7))
    litellm_s = wall([sys.executable, "-c", "import litellm"], env=env)
    print(f"rk --help: {help_s * 1000:.0f} ms (median of 7; bare python start {bare_s * 1000:.0f} ms; "
          f"`import litellm` alone {litellm_s:.2f} s)  target < 1500 ms")

    with tempfile.TemporaryDirectory() as d:
        first = wall([RK, "quickstart"], cwd=d, env=env)
        p1 = json.loads((Path(d) / "rk_runs/quickstart/provenance.json").read_text())
        second = wall([RK, "quickstart"], cwd=d, env=env)
        p2 = json.loads((Path(d) / "rk_runs/quickstart/provenance.json").read_text())
    print(f"rk quickstart, first run: {first:.1f} s, {p1['model_calls']} model calls")
    print(f"rk quickstart, rerun:     {second:.1f} s, {p2['model_calls']} model calls, {p2['cache_hits']} cache hits "
          f"({first / second:.2f}x faster)")
    ok = help_s < 1.5 and p2["model_calls"] == 0
    print("PASS" if ok else "FAIL")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
