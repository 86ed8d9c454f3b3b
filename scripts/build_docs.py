"""Build the docs site from the notebooks into `_docs/`, without Quarto.

    .venv/bin/python scripts/build_docs.py [--out _docs] [--no-exec] [--jobs N]

nbdev's own processing makes each page: its frontmatter (`# title` / `> description`), `show_doc` for every
exported function and class (`add_show_docs`), the directives (`#| hide`, `#| export`, `#| exports`,
`#| hide_line`, `#| filter_stream`, Quarto's `#| echo: false`, `#| output: asis`, ...) and links from
backticked names to their API reference (`add_links`). Unlike `nbdev_docs` (whose notebooks carry their
outputs), the notebooks here are committed without outputs, so every code cell is run first, as
`nbdev_test` runs it (cwd = the notebook's folder, `IN_TEST=1`, the `tst_flags` cells and `#| eval: false`
skipped), one process per notebook, `--jobs` at a time. `--no-exec` runs only what `show_doc` needs
(nbdev's `exec_show_docs`): a fast build without the examples' outputs.

The processed notebooks are rendered with markdown-it-py (CommonMark, as Jupyter renders a notebook's
markdown, plus tables, Pandoc attributes and Quarto's `:::` divs), Pygments and the Jinja2 template in
docs_src/. Pages: the index from nbs/index.ipynb (the README's source), then one page per notebook in
filename order (nbs/*.ipynb, then each subfolder as a sidebar section), named as nbdev names them
(`04_client.ipynb` -> `client.html`), so nbdev's doc links and nbs/_quarto.yml's site agree. Nothing on a
page is fetched from the network: figures are files next to the page, CSS is local, no JavaScript.

A notebook that fails to run fails the build, naming the notebook and the cell; the site is built in a
temporary folder and replaces `--out` only when every page is written.
"""
from __future__ import annotations

import argparse
import base64
import html
import json
import os
import re
import shutil
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor, as_completed
from multiprocessing import get_context
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "docs_src"
SKIP_RE = re.compile(r"^[_.]")  # nbdev's nbglob skips these files and folders


# ---------------------------------------------------------------------------------------------------------
# Which notebooks, in which order, under which page names


def page_name(rel: Path) -> Path:
    "The page nbdev (and Quarto) make for notebook `rel`: `04_client.ipynb` -> `client.html`."
    from nbdev.doclinks import _nbpath2html
    return _nbpath2html(rel)


def find_notebooks(nbs: Path) -> list[tuple[Path, str]]:
    "(notebook relative to `nbs`, folder section): index first, then nbs/*.ipynb by name, then each subfolder's."
    def ok(p: Path): return not SKIP_RE.match(p.name)
    top = sorted(p for p in nbs.glob("*.ipynb") if ok(p))
    top.sort(key=lambda p: p.name != "index.ipynb")  # stable: index first, the rest in filename order
    found = [(p.relative_to(nbs), "") for p in top]
    for d in sorted(p for p in nbs.rglob("*") if p.is_dir() and ok(p) and p != nbs):
        rel = d.relative_to(nbs)
        if any(SKIP_RE.match(part) for part in rel.parts): continue
        section = " / ".join(part.replace("_", " ").capitalize() for part in rel.parts)
        found += [(p.relative_to(nbs), section) for p in sorted(d.glob("*.ipynb")) if ok(p)]
    return found


def sidebar_entries(nbs: Path) -> list[tuple[str, str]]:
    "(notebook, section) as nbs/sidebar.yml (Quarto's sidebar) lists them; [] without one."
    import yaml
    f = nbs / "sidebar.yml"
    if not f.is_file(): return []
    d = yaml.safe_load(f.read_text(encoding="utf-8")) or {}
    side = (d.get("website") or {}).get("sidebar") or {}
    out: list[tuple[str, str]] = []
    def walk(items, section):
        for it in items or []:
            if isinstance(it, str): out.append((it, section))
            elif isinstance(it, dict) and "section" in it:
                walk(it.get("contents"), f"{section} / {it['section']}" if section else str(it["section"]))
            elif isinstance(it, dict) and isinstance(it.get("href"), str): out.append((it["href"], section))
            elif isinstance(it, dict): walk(it.get("contents"), section)
    walk(side.get("contents") if isinstance(side, dict) else None, "")
    return [(Path(p).as_posix(), sec) for p, sec in out]


def site_order(nbs: Path) -> list[tuple[Path, str]]:
    """(notebook, sidebar section) in the site's order: nbs/sidebar.yml's order and sections (what Quarto shows), and
    each notebook it does not list yet in filename order: after the notebook before it, in that one's section, or
    in a section for its folder. Without a sidebar.yml: filename order, a section per subfolder."""
    found = find_notebooks(nbs)
    by_rel = {rel.as_posix(): rel for rel, _ in found}
    order: list[tuple[Path, str]] = []
    for p, sec in sidebar_entries(nbs):
        if p in by_rel and all(p != r.as_posix() for r, _ in order): order.append((by_rel[p], sec))
    if not order: return found
    for i, (rel, folder_sec) in enumerate(found):
        if any(rel == r for r, _ in order): continue
        placed = [r for r, _ in order]
        prev = next((found[j][0] for j in range(i - 1, -1, -1) if found[j][0] in placed), None)
        if prev is None: order.insert(0, (rel, folder_sec))
        elif prev.parent == rel.parent:
            k = placed.index(prev)
            order.insert(k + 1, (rel, order[k][1]))
        else: order.append((rel, folder_sec))
    return order


def sidebar_yml(nbs: Path) -> str:
    "nbs/sidebar.yml for Quarto, as this site orders the notebooks (its sections kept, new notebooks added)."
    lines = ["website:", "  sidebar:", "    contents:"]
    section = ""
    for rel, sec in site_order(nbs):
        if sec != section and sec:
            lines += [f"      - section: {sec}", "        contents:"]
        section = sec
        lines.append(("          - " if sec else "      - ") + rel.as_posix())
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Processing one notebook (in a worker process): nbdev's processors, with every cell run


class NotebookFailed(Exception):
    "A cell of the notebook raised while the site was built."


def _first_cell_split(nb):
    """nbdev's frontmatter takes the whole first markdown cell for `# title` / `> description` and drops the rest
    (Quarto shows none of it): keep any other text of that cell as a cell of its own."""
    from execnb.nbio import mk_cell
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "raw": return
        if cell.cell_type != "markdown": continue
        lines = cell.source.splitlines()
        if not lines or not re.match(r"^#\s+\S", lines[0]): return
        keep, rest = [lines[0]], lines[1:]
        while rest and (not rest[0].strip() or re.match(r"^>\s", rest[0]) or re.match(r"^-\s+\S.*:.*\S\s*$", rest[0])):
            keep.append(rest.pop(0))
        if any(l.strip() for l in rest):
            cell.source = "\n".join(keep).rstrip()
            new = mk_cell("\n".join(rest).strip(), "markdown")
            nb.cells.insert(i + 1, new)
        return


def _skip_in_tests(cell, flags) -> bool:
    "What nbdev_test leaves out: non-code cells, `nbdev_export()`, `#| eval: false`, cells with a tst_flags directive."
    if cell.cell_type != "code" or not cell.source.strip(): return True
    if "nbdev_export" + "(" in cell.source: return True
    d = getattr(cell, "directives_", {}) or {}
    if d.get("eval:", [""])[0].lower() == "false": return True
    return bool(flags & d.keys())


def make_runner(nb_path: Path, run_all: bool, cell_timeout: int | None):
    from nbdev.config import get_config
    from nbdev.process import Processor, nb_lang
    from execnb.shell import CaptureShell

    flags = set(get_config().get("tst_flags", "").split())

    class run_cells(Processor):
        "Run the notebook's cells in order (all of them as nbdev_test does, or only what show_doc needs), keeping outputs."
        def begin(self):
            fm = getattr(self.nb, "frontmatter_", {}) or {}
            self.skip = nb_lang(self.nb) != "python" or str(fm.get("skip_exec", "")).lower() == "true"
            if not run_all: self.skip = self.skip or not self.nb.has_docs_ or str(fm.get("skip_showdoc", "")).lower() == "true"
            if self.skip: return
            self.cwd = os.getcwd()
            os.chdir(nb_path.parent)
            self.k = CaptureShell(nb_path, timeout=cell_timeout)
            self.k.run_cell("from nbdev.showdoc import show_doc")

        def __call__(self, cell):
            if self.skip: return
            if run_all: todo = not _skip_in_tests(cell, flags)
            else: todo = _needed_for_docs(cell)
            if not todo: return
            self.k.cell(cell)
            if self.k.exc is not None:
                where = (f"cell {cell.orig_idx_} (counting from 0, markdown cells included)" if "orig_idx_" in cell
                         else "the show_doc cell nbdev adds after an exported cell")
                tb = "".join(traceback.format_exception(self.k.exc)[-12:])
                raise NotebookFailed(f"{where} failed:\n{_indent(cell.source.strip())}\n{tb}")

        def end(self):
            if not self.skip: os.chdir(self.cwd)

    return run_cells


def _needed_for_docs(cell) -> bool:
    "What nbdev's exec_show_docs runs, less the cells that mix imports with other code (they need the cells before them)."
    import ast
    from nbdev.processors import _do_eval, _show_docs
    if cell.cell_type != "code" or not _do_eval(cell): return False
    if (getattr(cell, "directives_", {}) or {}).keys() & {"export", "exports", "exporti", "exec_doc"}: return True
    trees = cell.parsed_()
    return bool(_show_docs(trees)) or all(isinstance(t, (ast.Import, ast.ImportFrom)) for t in trees)


def _indent(s, n=4, most=12):
    lines = s.splitlines()
    more = [f"... ({len(lines) - most} more lines)"] if len(lines) > most else []
    return "\n".join(" " * n + l for l in lines[:most] + more)


def name_show_docs(cell):
    """The `show_doc` nbdev adds after an export names its entry by the exported name, the anchor nbdev's index links
    to (a decorated function would otherwise be shown under the name of the function it wraps)."""
    m = re.fullmatch(r"show_doc\(([\w.]+)\)", cell.source.strip()) if getattr(cell, "has_sd", False) else None
    if m: cell.source = f"show_doc({m.group(1)}, name={m.group(1)!r})"


def process_notebook(nb_path: Path, run_all: bool, cell_timeout: int | None):
    "The notebook after nbdev's docs processors, with `run_cells` in place of `exec_show_docs` (and no warning cell)."
    from execnb.nbio import read_nb
    from nbdev.process import NBProcessor
    from nbdev.processors import FilterDefaults, add_show_docs, exec_show_docs, insert_warning

    nb = read_nb(nb_path)
    nb.path_ = str(nb_path)
    for i, cell in enumerate(nb.cells): cell.orig_idx_ = i
    _first_cell_split(nb)
    runner = make_runner(nb_path, run_all, cell_timeout)
    procs = []
    for p in FilterDefaults().procs():  # respects settings.ini's procs and skip_procs
        if p in (insert_warning, exec_show_docs): continue
        procs.append(p)
        if p is add_show_docs:
            procs += [name_show_docs, runner]  # outputs first, so hide_line, filter_stream_, strip_ansi see them
    NBProcessor(nb=nb, procs=procs).process()
    return nb


def build_page(job: dict) -> dict:
    "Worker: run and render one notebook. Its own stdout/stderr (llama.cpp, warnings) go to a log shown on failure."
    nb_path, rel = Path(job["nb_path"]), Path(job["rel"])
    log = tempfile.NamedTemporaryFile("w+", prefix="docs-build-", suffix=".log", delete=False)
    os.dup2(log.fileno(), 1); os.dup2(log.fileno(), 2)
    import warnings
    warnings.filterwarnings("ignore", message="Found cells containing imports and other code")
    os.environ["IN_TEST"] = "1"
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    os.environ.setdefault("LITELLM_MODE", "PRODUCTION")
    start = time.time()
    try:
        nb = process_notebook(nb_path, job["run_all"], job["cell_timeout"])
        page = render_notebook(nb, rel, job["doc_url"])
        page.update(ok=True, seconds=time.time() - start, cpu=_cpu_seconds())
        return page
    except BaseException as e:
        msg = str(e) if isinstance(e, NotebookFailed) else "".join(traceback.format_exception(e)[-15:])
        sys.stdout.flush(); sys.stderr.flush()
        return dict(ok=False, error=msg, log=log.name, seconds=time.time() - start, cpu=_cpu_seconds())


_LIVE: set[int] = set()  # process groups of the notebooks running now
EXIT_GRACE_S = 5


def _child(job: dict, conn) -> None:
    os.setpgrp()  # a process group of its own: what the notebook starts (servers, pools) ends with it
    conn.send(build_page(job))
    conn.close()


def _kill_group(pgid: int) -> None:
    import signal
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try: os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError): return
        time.sleep(0.5)


def _in_new_process(job: dict) -> dict:
    """`build_page(job)` in a fresh interpreter, as nbdev_test runs each notebook. Once the page is back the
    process gets EXIT_GRACE_S to exit (its atexit handlers stop servers); then it and whatever it left running
    (an idle process pool waits minutes to exit) are ended."""
    ctx = get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    p = ctx.Process(target=_child, args=(job, send))
    p.start()
    _LIVE.add(p.pid)
    send.close()
    try:
        try: res = recv.recv()
        except EOFError:
            p.join()
            res = dict(ok=False, error=f"the process running it died (exit code {p.exitcode})", log=None, seconds=0, cpu=0)
        p.join(EXIT_GRACE_S)
    finally:
        _kill_group(p.pid)
        p.join(5)
        _LIVE.discard(p.pid)
    return res


def _cpu_seconds() -> float:
    "CPU time of this process and its finished children (model loads, sweeps' workers)."
    import resource
    return sum(r.ru_utime + r.ru_stime for r in (resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)))


# ---------------------------------------------------------------------------------------------------------
# Rendering: markdown-it-py + Pygments


_ANSI = re.compile(r"\x1B(?:[@-Z\\-_]|\[[0-?]*[ -/]*[@-~])")


def strip_ansi(s: str) -> str: return _ANSI.sub("", s)


def terminal_text(s: str) -> str:
    "What a terminal shows for `s`: each line's text after its last carriage return (progress bars), no ANSI codes."
    lines = strip_ansi(s).replace("\r\n", "\n").split("\n")
    return "\n".join(next((seg for seg in reversed(line.split("\r")) if seg), "") for line in lines)


def highlight(code: str, lang: str = "", attrs=None) -> str:
    from pygments import highlight as _hl
    from pygments.formatters import HtmlFormatter
    from pygments.lexers import TextLexer, get_lexer_by_name
    from pygments.util import ClassNotFound
    lang = ((lang or "").strip().strip("{}").split() or [""])[0].lower()  # "python", "{python}", "sh title=x"
    try: lexer = get_lexer_by_name({"sh": "bash", "shell": "bash", "py": "python", "ipython3": "python"}.get(lang, lang)) if lang else TextLexer()
    except ClassNotFound: lexer = TextLexer()
    body = _hl(code, lexer, HtmlFormatter(nowrap=True))
    cls = f' class="language-{html.escape(lang)}"' if lang else ""
    return f'<pre class="highlight"><code{cls}>{body}</code></pre>\n'


def slugify(text: str) -> str:
    "Pandoc's (Quarto's) heading ids, which nbdev's doc links use: `InferenceAPI.call` -> `inferenceapi.call`."
    s = re.sub(r"[^\w\s.-]", "", text.lower(), flags=re.UNICODE)
    s = re.sub(r"\s+", "-", s.strip())
    s = re.sub(r"^[^a-z]+", "", s)
    return s or "section"


_CALLOUT_TITLES = dict(note="Note", tip="Tip", warning="Warning", important="Important", caution="Caution")


def _div_attrs(params: str):
    "Classes, id and attributes of a Quarto/Pandoc fenced div: `::: {.callout-note title=\"x\"}` or `::: callout-note`."
    params = params.strip()
    classes, ident, attrs = [], None, {}
    if params.startswith("{") and params.endswith("}"):
        body = params[1:-1]
        for m in re.finditer(r'([.#]?)([\w:-]+)(?:=("(?:[^"\\]|\\.)*"|\S+))?', body):
            kind, name, val = m.groups()
            if kind == ".": classes.append(name)
            elif kind == "#": ident = name
            elif val is not None: attrs[name] = val.strip('"')
    elif params: classes = params.split()
    return classes, ident, attrs


class Renderer:
    "Markdown and notebook outputs to HTML for one page; collects its headings (TOC) and files (figures)."

    def __init__(self, page: Path, doc_url: str):
        from markdown_it import MarkdownIt
        from mdit_py_plugins.attrs import attrs_plugin
        from mdit_py_plugins.container import container_plugin
        from mdit_py_plugins.deflist import deflist_plugin
        from mdit_py_plugins.footnote import footnote_plugin
        self.page, self.doc_url = page, doc_url.rstrip("/") + "/" if doc_url else ""
        self.ids: set[str] = set()
        self.toc: list[tuple[int, str, str]] = []
        self.files: dict[str, bytes] = {}
        self.copies: dict[str, str] = {}  # page-relative path -> source file
        self.n_fig = 0
        md = MarkdownIt("commonmark", {"html": True, "highlight": highlight}).enable(["table", "strikethrough"])
        md.use(attrs_plugin, spans=True).use(deflist_plugin).use(footnote_plugin)
        md.use(container_plugin, name="div", validate=lambda params, *a: True,
               render=lambda renderer, tokens, idx, options, env: self._render_div(tokens, idx))
        self.md = md

    # -- markdown
    def _render_div(self, tokens, idx):
        tok = tokens[idx]
        if tok.nesting != 1: return "</div>\n"
        classes, ident, attrs = _div_attrs(tok.info)
        callout = next((c.split("-", 1)[1] for c in classes if c.startswith("callout-")), None)
        out = f'<div class="{html.escape(" ".join(classes + (["callout"] if callout else [])))}"'
        if ident: out += f' id="{html.escape(ident)}"'
        out += ">\n"
        if callout:
            title = attrs.get("title") or _CALLOUT_TITLES.get(callout, callout.capitalize())
            out += f'<div class="callout-title">{html.escape(title)}</div>\n'
        return out

    def _unique_id(self, base: str) -> str:
        i, ident = 0, base
        while ident in self.ids: i += 1; ident = f"{base}-{i}"
        self.ids.add(ident)
        return ident

    def is_doc_url(self, url: str) -> bool: return bool(self.doc_url) and url.startswith(self.doc_url)

    def _fix_url(self, url: str, kind: str) -> str:
        "nbdev's absolute doc links and links to notebooks become relative links to pages of this site."
        if self.is_doc_url(url):
            target = url[len(self.doc_url):]
            return os.path.relpath(target.split("#")[0] or "index.html", self.page.parent.as_posix() or ".") + (
                "#" + target.split("#", 1)[1] if "#" in target else "")
        if re.match(r"^[a-z][a-z0-9+.-]*:|^#|^/", url, re.I): return url
        path, _, frag = url.partition("#")
        if path.endswith(".ipynb"):
            return page_name(Path(path)).as_posix() + ("#" + frag if frag else "")
        if kind == "img" and path: self.copies[path] = path  # an image next to the notebook: copied next to the page
        return url

    def markdown(self, src: str, heading_ids: bool = True) -> str:
        tokens = self.md.parse(src, {})
        for i, tok in enumerate(tokens):
            if tok.type == "heading_open" and heading_ids:
                inline = tokens[i + 1]
                text = "".join(c.content for c in inline.children or [] if c.type in ("text", "code_inline"))
                m = re.search(r"\s*\{([^}]*)\}\s*$", inline.content)
                ident = None
                if m:  # Pandoc heading attributes: `## Title {#id .unnumbered}`
                    ident = next((a[1:] for a in m.group(1).split() if a.startswith("#")), None)
                    text = re.sub(r"\s*\{[^}]*\}\s*$", "", text)
                    for c in reversed(inline.children or []):
                        if c.type == "text":
                            c.content = re.sub(r"\s*\{[^}]*\}\s*$", "", c.content); break
                ident = self._unique_id(ident or slugify(text))
                tok.attrSet("id", ident)
                level = int(tok.tag[1])
                if level in (2, 3): self.toc.append((level, ident, text.strip()))
            if tok.type == "inline":
                for c in tok.children or []:
                    if c.type == "link_open" and c.attrGet("href"):
                        if self.is_doc_url(c.attrGet("href")): c.attrSet("class", "doclink")  # see _drop_dead_doclinks
                        c.attrSet("href", self._fix_url(c.attrGet("href"), "a"))
                    if c.type == "image" and c.attrGet("src"): c.attrSet("src", self._fix_url(c.attrGet("src"), "img"))
        return self.md.renderer.render(tokens, self.md.options, {})

    def inline(self, src: str) -> str: return self.md.renderInline(src)

    # -- files
    def add_file(self, data: bytes, ext: str, name: str | None = None) -> str:
        self.n_fig += 1
        rel = f"{self.page.stem}_files/{name or f'figure-{self.n_fig}.{ext}'}"
        self.files[(self.page.parent / rel).as_posix()] = data
        return rel

    # -- outputs
    def output(self, out, asis=False) -> str:
        ot = out.get("output_type")
        if ot == "stream":
            text = terminal_text("".join(out.get("text", [])))
            if not text.strip(): return ""
            return f'<pre class="output {html.escape(out.get("name", "stdout"))}">{html.escape(text.rstrip())}</pre>\n'
        if ot == "error":
            tb = strip_ansi("\n".join(out.get("traceback", [])))
            return f'<pre class="output error">{html.escape(tb)}</pre>\n'
        data, meta = out.get("data", {}), out.get("metadata", {})
        def get(k): v = data.get(k); return "".join(v) if isinstance(v, list) else v
        if asis and get("text/markdown") is not None:
            return self.markdown(_tidy_show_doc(get("text/markdown")))
        if get("text/html") is not None:
            return f'<div class="output html">{get("text/html")}</div>\n'
        for mime, ext in (("image/png", "png"), ("image/jpeg", "jpg"), ("image/gif", "gif")):
            if get(mime) is not None:
                rel = self.add_file(base64.b64decode(get(mime)), ext)
                size = meta.get(mime, {}) if isinstance(meta.get(mime), dict) else {}
                dims = "".join(f' {k}="{int(size[k])}"' for k in ("width", "height") if k in size)
                return f'<div class="output image"><img src="{rel}"{dims} alt="figure"></div>\n'
        if get("image/svg+xml") is not None:
            rel = self.add_file(get("image/svg+xml").encode(), "svg")
            return f'<div class="output image"><img src="{rel}" alt="figure"></div>\n'
        if get("text/markdown") is not None:
            return f'<div class="output markdown">{self.markdown(get("text/markdown"), heading_ids=False)}</div>\n'
        if get("text/plain") is not None:
            return f'<pre class="output result">{html.escape(strip_ansi(get("text/plain")))}</pre>\n'
        return ""


def _tidy_show_doc(md: str) -> str:
    """show_doc's markdown, less two nbdev glitches: `def f(\n    \n):` for a function without parameters, and links
    that add_links put inside the signature's code block (shown there as raw `[name](https://...)`)."""
    md = re.sub(r"\(\n\s*\n\)", "()", md)
    unlink = lambda m: re.sub(r"\[(`[^`\n]+`)\]\([^)\s]*\)", r"\1", m.group(0))
    return re.sub(r"^```.*?^```", unlink, md, flags=re.S | re.M)


_QOPT = re.compile(r"^\s*#\|\s*([\w-]+)\s*:\s*(.*?)\s*$")


def quarto_options(src: str) -> tuple[dict, str]:
    "The `#| key: value` options nbdev leaves in a cell's source for Quarto, and the code without them."
    import yaml
    lines, opts = src.splitlines(), {}
    while lines and _QOPT.match(lines[0]):
        k, v = _QOPT.match(lines.pop(0)).groups()
        try: opts[k] = yaml.safe_load(v) if v else True
        except Exception: opts[k] = v
    return opts, "\n".join(lines).strip("\n")


def render_notebook(nb, rel: Path, doc_url: str) -> dict:
    "One processed notebook as the page's parts: title, description, body HTML, TOC, files."
    from nbdev.processors import cell_lang
    page = page_name(rel)
    r = Renderer(page, doc_url)
    fm = getattr(nb, "frontmatter_", {}) or {}
    parts = []
    for cell in nb.cells:
        src = cell.get("source") or ""
        if cell.cell_type == "markdown":
            for name, att in (cell.get("attachments") or {}).items():
                mime = next(iter(att))
                rel_file = r.add_file(base64.b64decode(att[mime]), mime.split("/")[-1], name=name)
                src = src.replace(f"attachment:{name}", rel_file)
            parts.append(f'<div class="cell markdown">\n{r.markdown(src)}</div>\n')
            continue
        if cell.cell_type != "code": continue  # raw cells: the frontmatter nbdev put back, or Quarto-only content
        opts, code = quarto_options(src)
        if opts.get("include") is False: continue
        asis = opts.get("output") == "asis"
        is_doc = code.lstrip().startswith("show_doc(")
        outs = [] if opts.get("output") is False else cell.get("outputs", [])
        body = "".join(r.output(o, asis=asis) for o in outs)
        if is_doc:
            if body.strip():
                body = re.sub(r"^\s*<hr\s*/?>\s*", "", body)
                parts.append(f'<div class="cell api">\n{body}</div>\n')
            continue
        shown = "" if opts.get("echo") is False or not code.strip() else highlight(code, cell_lang(cell))
        if shown and opts.get("code-fold") not in (None, False):
            summary = html.escape(str(opts.get("code-summary") or "Code"))
            shown = f'<details class="code-fold"{" open" if opts["code-fold"] == "show" else ""}><summary>{summary}</summary>\n{shown}</details>\n'
        if not shown and not body.strip(): continue
        parts.append(f'<div class="cell code">\n{shown}{body}</div>\n')
    return dict(title=str(fm.get("title") or rel.stem), description=r.inline(str(fm["description"])) if fm.get("description") else "",
                body="".join(parts), toc=r.toc, files=r.files, copies=r.copies)


# ---------------------------------------------------------------------------------------------------------
# The site


def _pygments_css() -> str:
    from pygments.formatters import HtmlFormatter
    return HtmlFormatter(style="friendly").get_style_defs(".highlight")


_RE_ID = re.compile(r'\bid="([^"]+)"')
_RE_DOCLINK = re.compile(r'<a href="([^"]*)" class="doclink">(.*?)</a>', re.S)


def _drop_dead_doclinks(pages: list[dict]) -> None:
    """nbdev links every backticked name its index knows, private ones and methods without a `show_doc` too, to an
    anchor that is on no page; keep those names as code without a link (a link that lands nowhere is worse)."""
    ids = {p["page"]: set(_RE_ID.findall(p["body"])) for p in pages}
    for p in pages:
        here = Path(p["page"]).parent
        def fix(m):
            href, frag = html.unescape(m.group(1)).partition("#")[::2]
            target = os.path.normpath(here / href).replace(os.sep, "/") if href else p["page"]
            ok = target in ids and (not frag or frag in ids[target])
            return m.group(0) if ok else m.group(2)
        p["body"] = _RE_DOCLINK.sub(fix, p["body"])


def write_site(out: Path, nbs: Path, pages: list[dict], cfg) -> None:
    import jinja2
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=jinja2.select_autoescape(["html"]))
    tmpl = env.get_template("page.html")
    out.mkdir(parents=True, exist_ok=True)
    _drop_dead_doclinks(pages)
    (out / "site.css").write_text((TEMPLATES / "site.css").read_text() + "\n/* Pygments */\n" + _pygments_css())
    (out / ".nojekyll").write_text("")
    sections: list[tuple[str, list[dict]]] = []
    for p in pages:
        if not sections or sections[-1][0] != p["section"]: sections.append((p["section"], []))
        sections[-1][1].append(p)
    for p in pages:
        page = Path(p["page"])
        root = "../" * (len(page.parts) - 1)
        nav = [(sec, [dict(title=q["title"], href=root + q["page"], current=q is p) for q in items]) for sec, items in sections]
        text = tmpl.render(site_title=cfg.title, site_description=cfg.get("description", ""), root=root,
                           title=p["title"], description=p["description"], body=p["body"], toc=p["toc"], nav=nav,
                           source=p["rel"], git_url=cfg.get("git_url", ""), branch=cfg.get("branch", "main"),
                           is_index=p["page"] == "index.html")
        dest = out / page
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text, encoding="utf-8")
        for rel, data in p["files"].items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(data)
        nb_dir = nbs / Path(p["rel"]).parent
        for rel in p["copies"]:
            src, dst = (nb_dir / rel).resolve(), (out / page.parent / rel).resolve()
            if src.is_file() and out.resolve() in dst.parents:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, dst)


def _replace_dir(new: Path, out: Path) -> None:
    "Put the finished build at `out`, replacing what was there in two renames."
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        out.rename(old)
    new.rename(out)
    if old: shutil.rmtree(old, ignore_errors=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=None, help="output folder (default: settings.ini's doc_path, _docs)")
    ap.add_argument("--nbs", default=None, help="notebooks folder (default: settings.ini's nbs_path, nbs)")
    ap.add_argument("--no-exec", action="store_true", help="run only what show_doc needs: fast, no example outputs")
    ap.add_argument("--jobs", "-j", type=int, default=min(2, os.cpu_count() or 1), help="notebooks run at once (default 2)")
    ap.add_argument("--cell-timeout", type=int, default=600, help="seconds one cell may run (default 600)")
    ap.add_argument("--only", nargs="+", metavar="GLOB", help="a preview of only these notebooks (e.g. '04*' 'experiments/*')")
    ap.add_argument("--write-sidebar", action="store_true", help="write nbs/sidebar.yml (for Quarto) from the notebooks found, then exit")
    args = ap.parse_args(argv)

    os.chdir(ROOT)  # nbdev reads settings.ini from here
    from nbdev.config import get_config
    cfg = get_config()
    nbs = Path(args.nbs).resolve() if args.nbs else Path(cfg.nbs_path)
    out = Path(args.out).resolve() if args.out else Path(cfg.doc_path)
    if args.write_sidebar:
        (nbs / "sidebar.yml").write_text(sidebar_yml(nbs))
        print(f"wrote {nbs / 'sidebar.yml'}")
        return 0

    found = site_order(nbs)
    if args.only:
        from fnmatch import fnmatch
        found = [(rel, sec) for rel, sec in found
                 if any(fnmatch(rel.as_posix(), g) or fnmatch(rel.as_posix(), g + ".ipynb") for g in args.only)]
    if not found:
        print(f"no notebooks in {nbs}", file=sys.stderr)
        return 1
    names: dict[str, Path] = {}
    for rel, _ in found:
        name = page_name(rel).as_posix()
        if name in names:
            print(f"{rel} and {names[name]} would both be {name}: rename one", file=sys.stderr)
            return 1
        names[name] = rel
    doc_url = f"{cfg.get('doc_host', '')}{cfg.get('doc_baseurl', '')}"
    mode = "only what show_doc needs" if args.no_exec else "every cell"
    print(f"== docs: {len(found)} notebooks from {os.path.relpath(nbs)}/ ({mode} run, {args.jobs} at a time) -> {os.path.relpath(out)}/", flush=True)

    start = time.time()
    jobs = [dict(nb_path=str(nbs / rel), rel=str(rel), run_all=not args.no_exec, cell_timeout=args.cell_timeout,
                 doc_url=doc_url) for rel, _ in found]
    # Longest first, so two workers finish together: the last build's times (kept in the output folder), else
    # the subfolders' notebooks (experiments) first.
    times_file = out / ".build-times.json"
    try: last = json.loads(times_file.read_text())
    except (OSError, ValueError): last = {}
    jobs.sort(key=lambda j: (-last.get(j["rel"], 0), "/" not in j["rel"]))
    results: dict[str, dict] = {}
    ex = ThreadPoolExecutor(max_workers=max(1, args.jobs))
    try:
        futs = {ex.submit(_in_new_process, j): j["rel"] for j in jobs}
        for fut in as_completed(futs):
            rel = futs[fut]
            results[rel] = res = fut.result()
            status = "ok" if res["ok"] else "FAILED"
            print(f"  {rel:<40} {res['seconds']:6.1f}s (cpu {res['cpu']:5.1f}s)  {status}", flush=True)
    except BaseException:  # Ctrl-C: the notebooks' processes are in groups of their own, which the terminal does not reach
        for pgid in list(_LIVE): _kill_group(pgid)
        raise
    finally:
        ex.shutdown(wait=True, cancel_futures=True)

    failed = [(rel, results[str(rel)]) for rel, _ in found if not results[str(rel)]["ok"]]
    if failed:
        for rel, res in failed:
            print(f"\n!! {nbs.name}/{rel}: {res['error'].rstrip()}", file=sys.stderr)
            if res.get("log") and Path(res["log"]).exists():
                tail = Path(res["log"]).read_text(errors="replace").strip().splitlines()[-20:]
                if tail: print("   its process's own output (last lines):\n" + _indent("\n".join(tail)), file=sys.stderr)
                Path(res["log"]).unlink(missing_ok=True)
        print(f"\ndocs build failed: {len(failed)} notebook(s) did not run; {os.path.relpath(out)}/ left as it was", file=sys.stderr)
        return 1
    for res in results.values():
        if res.get("log"): Path(res["log"]).unlink(missing_ok=True)

    pages = [dict(results[str(rel)], rel=rel.as_posix(), page=page_name(rel).as_posix(), section=sec) for rel, sec in found]
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.new-", dir=out.parent))
    try:
        write_site(tmp, nbs, pages, cfg)
        (tmp / ".build-times.json").write_text(json.dumps({rel: round(r["seconds"], 1) for rel, r in results.items()}, indent=1))
        _replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    print(f"== docs: {len(pages)} pages in {os.path.relpath(out)}/ ({time.time() - start:.0f}s); open {os.path.relpath(out)}/index.html", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
