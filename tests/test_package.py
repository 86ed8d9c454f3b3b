"""The package as a user gets it: light imports, a wheel with its data files, the README in sync."""
import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_messages_client_cache_testing_imports_do_not_import_litellm():
    # litellm costs seconds per process: the client imports it on its first provider call, not before
    code = ("import sys, research_kit, research_kit.messages, research_kit.cache, research_kit.client, research_kit.testing, "
            "research_kit.config, research_kit.experiment, research_kit.runner, research_kit.cli; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('litellm', 'llama_cpp', 'openai', 'pandas')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_wheel_from_a_clean_tree_installs_a_working_package_with_its_data(tmp_path):
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split("\n")
    src = tmp_path / "src"
    for f in filter(None, files):
        if not (ROOT / f).is_file(): continue
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        (src / f).write_bytes((ROOT / f).read_bytes())
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path / "dist"), str(src)],
                   check=True, capture_output=True, text=True)
    wheel = next((tmp_path / "dist").glob("research_kit-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("research_kit/messages.py", "research_kit/local.py", "research_kit/data/local_transcript.json",
              "research_kit/data/pixel.png", "research_kit/data/example_prompts.csv", "research_kit/experiments/prompt_sweep.ipynb",
              "research_kit/constitutional.py", "research_kit/data/constitutions/harmless.json",
              "research_kit/data/constitutions/educational.json", "research_kit/data/cai_templates/comparison.jinja",
              "research_kit/data/constitutional_prompts.csv", "research_kit/experiments/constitutional.ipynb"):
        assert f in names, f
    entry_points = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "rk = research_kit.cli:main" in entry_points
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("METADATA"))).decode()
    assert "Provides-Extra: local" in meta and "Provides-Extra: dev" in meta
    assert 'llama-cpp-python==0.3.36; extra == "local"' in meta and "Requires-Dist: litellm==1.106.2" in meta

    site = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
                   check=True, capture_output=True, text=True)
    code = ("import research_kit, research_kit.messages as m, json; from importlib import resources; "
            "print(research_kit.__file__); "
            "print(json.loads(resources.files('research_kit').joinpath('data/local_transcript.json').read_text())['human']); "
            "print(m.Prompt.user('hi').content_hash); "
            "from research_kit.runner import resolve_notebook; print(resolve_notebook('prompt_sweep')); "
            "from research_kit.constitutional import Constitution, Templates, load_prompts; "
            "print(Constitution.load('educational').source); print(Templates().path('comparison')); print(len(load_prompts()))")
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {str(site)!r}); " + code],
                         cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0].startswith(str(site))  # the installed copy, not the source tree
    assert out[1] == "Human"
    assert out[3] == str(site / "research_kit" / "experiments" / "prompt_sweep.ipynb")  # `rk run prompt_sweep` works installed
    assert out[4] == str(site / "research_kit" / "data" / "constitutions" / "educational.json")
    assert out[5] == str(site / "research_kit" / "data" / "cai_templates" / "comparison.jinja") and out[6] == "8"


def test_readme_matches_the_index_notebook():
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "sync_readme.py"), "--check"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/test.sh" in readme and '"local/gemma-3-270m"' in readme
    assert ".venv/bin/python tests/bench_client.py" in readme  # the benchmark command, in the development section
    # the main command: install with the local model and run the quickstart, from only python3
    assert 'python3 -m venv .venv && .venv/bin/pip install -q ".[local]" && .venv/bin/rk quickstart' in readme
    assert "--secrets SECRETS" in readme and "-p model openai/gpt-4o-mini" in readme
