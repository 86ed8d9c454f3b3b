"""The labeler in a real JupyterLab (started here on 127.0.0.1) driven by Debian's headless Chromium through
Playwright: five items labeled with the keyboard, one with the buttons, the kernel restarted, the notebook
reopened: the six labels are in the store and the labeler resumes at the seventh item. A screenshot of each
stage is written to _labeling_screenshots/ for review."""
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request

import nbformat
import pytest

from conftest import ROOT, open_page, screenshot_dir

N = 12
NOTEBOOK = f"""\
import pandas as pd
from research_kit.labeling.schema import likert
from research_kit.labeling.widget import Labeler
items = pd.DataFrame({{"input": [f"Question number {{i}}: is this answer harmful?" for i in range(1, {N + 1})],
                      "output": [f"Answer number {{i}}" + (" </td><script>alert(1)</script>" if i == 3 else "") for i in range(1, {N + 1})]}})
lab = Labeler(items, likert("harm", rationale=False, instructions="Rate how harmful the answer is."), "labels.db", labeler="alice")
lab"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def lab_server(tmp_path_factory):
    "JupyterLab on 127.0.0.1 with a fresh token, its config, data and runtime dirs in a temp folder; the notebook in its root."
    base = tmp_path_factory.mktemp("jupyterlab")
    root = base / "root"
    root.mkdir()
    nb = nbformat.v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    nb.cells = [nbformat.v4.new_code_cell(NOTEBOOK), nbformat.v4.new_markdown_cell("The labels are saved in labels.db.")]
    nbformat.write(nb, root / "label.ipynb")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**os.environ, **{f"JUPYTER_{k}_DIR": str(base / k.lower()) for k in ("CONFIG", "RUNTIME")}}
    (base / "config" / "labconfig").mkdir(parents=True)  # no news: JupyterLab would offer to fetch a feed from the network
    (base / "config" / "jupyter_server_config.json").write_text('{"LabApp": {"news_url": null}}')
    (base / "config" / "labconfig" / "page_config.json").write_text('{"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": true}}')
    log = open(base / "jupyterlab.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate", "--LabApp.extension_manager=readonly",
         f"--LabApp.workspaces_dir={base / 'workspaces'}", f"--LabApp.user_settings_dir={base / 'settings'}"],
        env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(300):  # at most ~60 s
            if proc.poll() is not None: pytest.fail(f"jupyterlab exited with {proc.returncode}:\n{(base / 'jupyterlab.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=1)
                break
            except OSError: time.sleep(0.2)
        else: pytest.fail("jupyterlab did not answer within 60 s")
        yield dict(url=url, token=token, root=root, log=base / "jupyterlab.log")
    finally:
        proc.terminate()
        try: proc.wait(15)
        except subprocess.TimeoutExpired: proc.kill()
        log.close()


KERNEL_IDLE = "() => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget; const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel; return !!k && k.status === 'idle'; }"


def _open_and_run(browser, server):
    "Open the notebook, wait for its kernel, run every cell and wait for the labeler to render."
    pg = open_page(browser, f"{server['url']}/lab/tree/label.ipynb?token={server['token']}", timeout_ms=60_000)
    pg.wait_for_function(KERNEL_IDLE, timeout=60_000)
    pg.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
    pg.wait_for_selector(".rk-labeler .rk-keys", timeout=60_000)
    return pg


def _wait_text(pg, text: str, timeout_ms: int = 15_000):
    pg.wait_for_function("t => document.querySelector('.rk-labeler').innerText.includes(t)", arg=text, timeout=timeout_ms)


def _labels(server):
    from research_kit.labeling.store import LabelStore
    with LabelStore(server["root"] / "labels.db") as store:
        return store.labels()


def test_label_restart_resume_in_jupyterlab(chromium, lab_server):
    shots = screenshot_dir("_labeling_screenshots")
    pg = _open_and_run(chromium, lab_server)
    _wait_text(pg, "Question number 1:")
    pg.screenshot(path=str(shots / "1_first_item.png"))
    pg.click(".rk-labeler .rk-keys")  # the strip has focus after render; a click is what a person does anyway
    for i, key in zip(range(1, 6), "12345"):  # five items with the keyboard: a digit, then Enter
        pg.keyboard.press(key)
        pg.keyboard.press("Enter")
        _wait_text(pg, f"Question number {i + 1}:")
        if i == 2:  # item 3 carries markup: shown as text, never run
            assert "</td><script>alert(1)</script>" in pg.inner_text(".rk-labeler")
    # the notebook was not touched by those keys: JupyterLab's own shortcuts (1-5: markdown heading) did not fire
    assert pg.evaluate("document.querySelectorAll('.jp-Notebook .jp-MarkdownCell').length") == 1
    assert pg.evaluate("document.querySelectorAll('.jp-Notebook .jp-CodeCell').length") == 1
    pg.locator(".rk-labeler .rk-option").nth(3).click()  # the sixth with the buttons: "4", then Save
    pg.locator(".rk-labeler .rk-save").click()
    _wait_text(pg, "Question number 7:")
    pg.screenshot(path=str(shots / "2_after_six.png"))
    labels = _labels(lab_server)
    assert len(labels) == 6 and set(labels["labeler"]) == {"alice"}
    assert sorted(v["harm"] for v in labels["value"]) == [1, 2, 3, 4, 4, 5]

    # restart the kernel (no dialog: the session's own restart), then reopen the notebook and run it again
    pg.evaluate("window.jupyterapp.shell.currentWidget.sessionContext.restartKernel()")
    pg.wait_for_function(KERNEL_IDLE, timeout=60_000)
    assert not pg.errors, pg.errors
    pg.close()
    pg = _open_and_run(chromium, lab_server)
    _wait_text(pg, "Question number 7:")
    text = pg.inner_text(".rk-labeler")
    assert "6 of 12" in text, text
    pg.screenshot(path=str(shots / "3_resumed_after_restart.png"))
    assert len(_labels(lab_server)) == 6
    assert not pg.errors, pg.errors
    assert not [u for u in pg.outside if not u.startswith("blob:http://127.0.0.1")], pg.outside
    pg.close()
