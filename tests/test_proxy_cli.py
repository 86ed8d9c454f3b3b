"""`rk proxy` through the real `rk` entry point: init prints the admin key once, keys create/list/revoke, groups set,
usage, and bad input ending in rk's error line with exit status 2. (`rk proxy serve` is run by tests/test_proxy_api.py.)"""
import re

from research_kit.proxy.store import ProxyStore

SECRET = re.compile(r"rk-[A-Za-z0-9_-]{43}")


def test_init_prints_the_admin_key_once(rk, tmp_path):
    d = tmp_path / "proxy"
    out = rk("proxy", "init", "--dir", str(d), cwd=tmp_path, timeout=60)
    assert out.returncode == 0, out.stderr
    secrets = SECRET.findall(out.stdout + out.stderr)
    assert len(secrets) == 1, out.stdout
    assert "shown this once and never again" in out.stdout and str(d / "proxy.yaml") in out.stdout
    assert (d / "proxy.yaml").is_file()
    with ProxyStore(d) as store: assert store.authenticate(secrets[0]).admin
    again = rk("proxy", "init", "--dir", str(d), cwd=tmp_path, timeout=60)
    assert again.returncode == 2 and again.stderr.startswith("rk: error: ") and "proxy.db exists" in again.stderr
    assert not SECRET.search(again.stdout + again.stderr)


def test_keys_groups_and_usage(rk, tmp_path):
    d = str(tmp_path / "proxy")
    assert rk("proxy", "init", "--dir", d, cwd=tmp_path, timeout=60).returncode == 0
    g = rk("proxy", "groups", "set", "--dir", d, "lab", "--models", "gpt-4o*,group:local", "--quota", "*:daily:50000", "--budget-usd", "20",
           cwd=tmp_path, timeout=60)
    assert g.returncode == 0 and "group lab: models gpt-4o*, group:local; shared limits: *:daily:50000, budget $20" in g.stdout, g.stderr
    made = rk("proxy", "keys", "create", "--dir", d, "--name", "alice", "--group", "lab", "--models", "gpt-4o-mini", "--quota",
              "openai:daily:100k,$5", "local:monthly:2M", "--budget-usd", "10", "--rpm", "60", "--tpm", "20000", "--max-parallel", "4",
              "--expires", "30d", cwd=tmp_path, timeout=60)
    assert made.returncode == 0, made.stderr
    [secret] = SECRET.findall(made.stdout)
    kid = re.search(r"made key (k_[0-9a-f]{8}) \(alice\)", made.stdout).group(1)
    with ProxyStore(d) as store:
        k = store.authenticate(secret)
        assert (k.id, k.group, k.models, [str(q) for q in k.quotas]) == (kid, "lab", ("gpt-4o-mini",), ["openai:daily:100000,$5", "local:monthly:2000000"])
        assert (k.budget_usd, k.rpm, k.tpm, k.max_parallel) == (10.0, 60, 20000, 4) and k.expires_at - k.created_at == 30 * 86400
        for i in range(3):
            store.log(k, "gpt-4o-mini", "openai", status=200 if i else 429, cached=i == 2, prompt_tokens=100, completion_tokens=20,
                      cost_usd=0.002, saved_usd=0, latency_ms=10, added_ms=0.5)
    listed = rk("proxy", "keys", "list", "--dir", d, cwd=tmp_path, timeout=60)
    assert listed.returncode == 0 and kid in listed.stdout and "openai:daily:100000,$5" in listed.stdout and secret[:7] in listed.stdout
    assert not SECRET.search(listed.stdout) and secret[7:] not in listed.stdout
    usage = rk("proxy", "usage", "--dir", d, "--key", "alice", "--days", "7", cwd=tmp_path, timeout=60)
    assert usage.returncode == 0, usage.stderr
    assert "total: 3 requests (1 cached, 1 errors), 360 tokens, $0.0060 spent" in usage.stdout and "gpt-4o-mini" in usage.stdout
    revoked = rk("proxy", "keys", "revoke", "--dir", d, "alice", cwd=tmp_path, timeout=60)
    assert revoked.returncode == 0 and f"revoked {kid} (alice)" in revoked.stdout
    assert kid not in rk("proxy", "keys", "list", "--dir", d, cwd=tmp_path, timeout=60).stdout
    assert kid in rk("proxy", "keys", "list", "--dir", d, "--all", cwd=tmp_path, timeout=60).stdout


def test_bad_input_is_one_error_line_and_exit_2(rk, tmp_path):
    d = str(tmp_path / "proxy")
    none = rk("proxy", "keys", "list", "--dir", d, cwd=tmp_path, timeout=60)
    assert none.returncode == 2 and none.stderr.startswith("rk: error: ") and f"rk proxy init --dir {d}" in none.stderr
    assert rk("proxy", "init", "--dir", d, cwd=tmp_path, timeout=60).returncode == 0
    for args, says in ((["keys", "create", "--dir", d, "--name", "x", "--quota", "openai:weekly:5"], "the period must be one of"),
                       (["keys", "create", "--dir", d, "--name", "x", "--rpm", "0"], "rpm=0: give a whole number > 0"),
                       (["keys", "create", "--dir", d, "--name", "x", "--expires", "soon"], "--expires 'soon': give a span"),
                       (["keys", "revoke", "--dir", d, "nobody"], "no key 'nobody' in"),
                       (["keys", "create", "--dir", d], "the following arguments are required: --name")):
        r = rk("proxy", *args, cwd=tmp_path, timeout=60)
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 2 and says in last and "Traceback" not in r.stderr, (args, r.stderr)
        assert last.startswith("rk: error: ") or last.startswith("rk proxy keys create: error: ")  # rk's line, or argparse's after its usage
