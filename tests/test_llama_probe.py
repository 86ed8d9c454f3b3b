"""The embedded model on every CPU: the AMX kernels kept off, a probe child that dies falls back, two deaths are one
clear error, and the verdict is remembered across processes. Each test gets its own user cache dir (so its own
verdicts); the model itself is read from where it already is."""
import json
import os
import subprocess
import sys

import pytest

import research_kit.local as local  # registers the provider; import before litellm
import research_kit.llama_probe as llama_probe

# Probe children standing in for CPUs this machine is not: each changes one thing in the real child, then runs it.
FAKE_AMX = """
import research_kit.llama_probe as P
real_info = P.system_info()
P.system_info = lambda: real_info + " AMX_INT8 = 1 |"
P.probe_main()
"""
KILLED_WITH_EXTRAS = """
import os, signal
import research_kit.llama_probe as P
P.choose = lambda info: True  # the first try has the extra buffer types on, whatever this CPU is
real_load = P.load_llama
def load(path, extra_bufts, **kw):
    if extra_bufts: os.kill(os.getpid(), signal.SIGILL)  # as llama.cpp's AMX kernel does on such a CPU
    return real_load(path, extra_bufts, **kw)
P.load_llama = load
P.probe_main()
"""
ALWAYS_KILLED = "import os, signal; os.kill(os.getpid(), signal.SIGILL)"


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    "A user cache dir with no verdicts; the model stays where it is; no forced setting."
    model = local.model_path()
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RESEARCH_KIT_MODEL_DIR", str(model.parent))
    monkeypatch.delenv(llama_probe.ENV_VAR, raising=False)
    return tmp_path


def no_probe(*a, **kw):
    raise AssertionError("a probe child was started")


def loaded(m: local.LocalModel) -> bool:
    "The setting the model was really loaded with, after checking it answers."
    out = m.generate("The capital of France is", max_tokens=3, temperature=0)
    assert out["usage"]["completion_tokens"] > 0
    setting = bool(m.llm.model_params.use_extra_bufts)
    m.llm.close()
    return setting


def test_with_amx_reported_the_model_loads_without_extra_buffer_types(fresh_cache, monkeypatch):
    monkeypatch.setattr(llama_probe, "PROBE_CHILD", FAKE_AMX)
    m = local.LocalModel()
    assert m.verdict["status"] == "ok" and "AMX_INT8 = 1" in m.verdict["system_info"]
    assert [(p["mode"], p["extra_bufts"], p["outcome"]) for p in m.verdict["probes"]] == [("auto", False, "ok")]
    assert m.extra_bufts is False and loaded(m) is False


def test_with_amx_reported_and_an_inconclusive_probe_the_parent_still_keeps_amx_off(fresh_cache, monkeypatch):
    real_info = llama_probe.system_info()
    monkeypatch.setattr(llama_probe, "system_info", lambda: real_info + " AMX_INT8 = 1 |")
    monkeypatch.setattr(llama_probe, "PROBE_CHILD", "raise OSError('no room for a child')")
    m = local.LocalModel()
    assert m.verdict["status"] == "inconclusive" and not llama_probe.verdict_path().exists()  # not remembered
    assert m.extra_bufts is False and loaded(m) is False


def test_a_child_killed_by_sigill_falls_back_to_the_safe_setting_and_is_remembered(fresh_cache, monkeypatch):
    monkeypatch.setattr(llama_probe, "PROBE_CHILD", KILLED_WITH_EXTRAS)
    m = local.LocalModel()
    assert [(p["mode"], p["extra_bufts"], p["outcome"]) for p in m.verdict["probes"]] == [("auto", True, "SIGILL"), ("off", False, "ok")]
    assert m.extra_bufts is False and loaded(m) is False
    saved = json.loads(llama_probe.verdict_path().read_text())
    assert saved["status"] == "ok" and saved["extra_bufts"] is False
    assert saved["build"]["llama_cpp_python"] and saved["cpu_flags"] == llama_probe.cpu_flags()


def test_a_second_death_is_one_clear_error_and_the_next_attempt_needs_no_child(fresh_cache, monkeypatch):
    monkeypatch.setattr(llama_probe, "PROBE_CHILD", ALWAYS_KILLED)
    with pytest.raises(local.LocalBuildUnsupported) as e:
        local.LocalModel()
    msg = str(e.value)
    assert "\n" not in msg and "cannot run on this CPU" in msg and "SIGILL" in msg
    assert msg.endswith('CMAKE_ARGS="-DGGML_NATIVE=OFF" pip install --force-reinstall --no-cache-dir llama-cpp-python==0.3.36')
    saved = json.loads(llama_probe.verdict_path().read_text())
    first_on = llama_probe.choose(llama_probe.system_info())  # on: a second child tries off; off already: none
    assert saved["status"] == "broken" and [p["outcome"] for p in saved["probes"]] == ["SIGILL"] * (2 if first_on else 1)
    monkeypatch.setattr(llama_probe, "run_probe", no_probe)
    with pytest.raises(local.LocalBuildUnsupported, match="cannot run on this CPU"):
        local.LocalModel()


def test_the_error_reaches_a_caller_of_inferenceapi_as_an_exception_not_a_dead_process(fresh_cache, tmp_path):
    code = ("import research_kit.llama_probe as P\n"
            f"P.PROBE_CHILD = {ALWAYS_KILLED!r}\n"
            "from research_kit.client import InferenceAPI\n"
            f"api = InferenceAPI(cache_dir={str(tmp_path / 'api')!r})\n"
            "try: api.call('local/gemma-3-270m', 'Hi', max_tokens=4)\n"
            "except Exception as e: print('raised', type(e).__name__, str(e).splitlines()[0])\n")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=os.environ.copy())
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.startswith("raised RequestRejected") and "cannot run on this CPU" in p.stdout, p.stdout
    assert "GGML_NATIVE=OFF" in p.stdout and p.stdout.rstrip().endswith("(after 1 attempt)"), p.stdout  # no retries
    assert "Traceback" not in p.stderr, p.stderr[-2000:]


VERDICT_CHILD = """
import sys, research_kit.local as L
if sys.argv[1] == "dying": L.llama_probe.PROBE_CHILD = "import os, signal; os.kill(os.getpid(), signal.SIGILL)"
m = L.LocalModel.get()
out = m.generate("The capital of France is", max_tokens=3, temperature=0)
print(m.verdict["source"], m.extra_bufts, out["usage"]["completion_tokens"])
"""


def test_the_remembered_verdict_skips_the_probe_in_the_next_process(fresh_cache):
    run = lambda mode: subprocess.run([sys.executable, "-c", VERDICT_CHILD, mode], capture_output=True, text=True,
                                      timeout=300, env=os.environ.copy())
    first = run("real")
    assert first.returncode == 0, first.stderr[-2000:]
    source, setting, tokens = first.stdout.split()
    assert source == "probe" and int(tokens) > 0
    # every probe child would now be killed: the second process works, so it started none
    second = run("dying")
    assert second.returncode == 0, second.stderr[-2000:]
    source2, setting2, tokens2 = second.stdout.split()
    assert source2 == str(llama_probe.verdict_path()) and setting2 == setting and int(tokens2) > 0
    assert len(list(llama_probe.verdict_dir().glob("*.json"))) == 1


@pytest.mark.parametrize("value, want", [("off", False), ("on", True)])
def test_the_environment_variable_forces_a_setting_without_a_probe(fresh_cache, monkeypatch, value, want):
    monkeypatch.setenv(llama_probe.ENV_VAR, value)
    monkeypatch.setattr(llama_probe, "run_probe", no_probe)
    if want and llama_probe.has_amx(llama_probe.system_info()):  # on with AMX kills this process: the verdict only
        v = llama_probe.verdict(local.model_path())
        assert v["source"] == llama_probe.ENV_VAR and v["extra_bufts"] is True
        return
    m = local.LocalModel()
    assert m.verdict["source"] == llama_probe.ENV_VAR and m.extra_bufts is want
    assert loaded(m) is want


def test_a_bad_value_of_the_environment_variable_names_it_and_the_choices(fresh_cache, monkeypatch):
    monkeypatch.setenv(llama_probe.ENV_VAR, "amx-please")
    with pytest.raises(ValueError, match=r"RESEARCH_KIT_LOCAL_EXTRA_BUFTS='amx-please' is not a setting: use 'on'"):
        local.LocalModel()


def test_a_rebuilt_library_is_a_new_build_with_its_own_verdict(fresh_cache, monkeypatch):
    keys = [llama_probe.verdict_path()]
    ident = llama_probe.build_identity()
    assert ident["libraries"] and llama_probe.verdict_path() == keys[0]
    ident["libraries"][0][2] += 1  # the same library file, written again (a reinstall)
    monkeypatch.setattr(llama_probe, "build_identity", lambda: ident)
    keys.append(llama_probe.verdict_path())
    monkeypatch.setattr(llama_probe, "cpu_flags", lambda: "fpu sse sse2")  # another CPU
    keys.append(llama_probe.verdict_path())
    assert len(set(keys)) == 3


def test_processes_starting_together_on_a_new_machine_probe_once(fresh_cache):
    "A sweep's workers all start on a fresh machine: one probes, the others wait for its verdict."
    code = "import research_kit.llama_probe as P, research_kit.local as L; print(P.verdict(L.model_path())['source'])"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env=os.environ.copy()) for _ in range(3)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1][-1000:] for o in outs]
    sources = sorted(o[0].strip() for o in outs)
    assert sources.count("probe") == 1 and sources.count(str(llama_probe.verdict_path())) == 2, sources
