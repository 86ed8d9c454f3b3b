"use strict";
(function () {
  // Per-instance drill-down. Each run's rows sit in their own application/json script tag and are parsed
  // the first time that run is chosen. Only the current page's rows become DOM; sort and filter work on arrays.
  // Data is only ever written with textContent, so a completion holding markup shows as text.
  const cfg = JSON.parse(document.getElementById("report-config").textContent);
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => { const e = document.createElement(tag); if (cls) e.className = cls; if (text != null) e.textContent = text; return e; };
  const CELL_CHARS = 200;
  const cache = new Map();
  const st = { run: null, order: [], sortCol: -1, sortDir: 1, page: 0, chosen: -1 };

  function load(i) {
    if (!cache.has(i)) {
      const d = JSON.parse($(cfg.runs[i].id).textContent);
      const textCols = d.columns.map((c, k) => d.kinds[k] === "num" ? -1 : k).filter((k) => k >= 0 && d.columns[k] !== "prompt");
      d.hay = d.rows.map((r) => textCols.map((k) => r[k] == null ? "" : String(r[k])).join("\u0001").toLowerCase());
      d.pcol = d.columns.indexOf("perturbation");
      d.mcol = d.primary ? d.columns.indexOf(d.primary) : -1;
      cache.set(i, d);
    }
    return cache.get(i);
  }

  function fmt(v, kind) {
    if (v == null) return "";
    if (kind === "num") return Number.isInteger(v) ? String(v) : v.toFixed(3);
    return String(v);
  }
  const short = (s) => s.length > CELL_CHARS ? s.slice(0, CELL_CHARS) + "\u2026" : s;

  function chooseRun(i) {
    const d = load(i);
    st.run = d; st.sortCol = -1; st.sortDir = 1; st.chosen = -1;
    const pert = $("f-pert"); pert.textContent = "";
    pert.append(new Option("all", "__all"));
    if (d.pcol >= 0) {
      pert.append(new Option("original only", "__orig"));
      for (const p of d.perturbations) pert.append(new Option(p, p));
    }
    pert.disabled = d.pcol < 0;
    const corr = $("f-correct"); corr.disabled = d.mcol < 0;
    corr.options[1].text = d.mcol >= 0 ? `${d.primary} = 1` : "correct";
    corr.options[2].text = d.mcol >= 0 ? `${d.primary} < 1` : "incorrect";
    $("run-note").textContent = d.shown < d.total ? `showing ${d.shown} of ${d.total} requests (max_instances)` : `${d.total} requests`;
    $("detail").hidden = true;
    head(); apply();
  }

  function head() {
    const tr = $("inst-head"); tr.textContent = "";
    st.run.columns.forEach((c, k) => {
      const th = el("th", st.run.kinds[k] === "num" ? "num" : "", c);
      if (k === st.sortCol) th.classList.add(st.sortDir > 0 ? "sorted-asc" : "sorted-desc");
      th.title = "sort by " + c;
      th.addEventListener("click", () => sortBy(k));
      tr.append(th);
    });
  }

  function apply() {
    const d = st.run, q = $("f-text").value.trim().toLowerCase(), p = $("f-pert").value, c = $("f-correct").value;
    const out = [];
    for (let i = 0; i < d.rows.length; i++) {
      const r = d.rows[i];
      if (q && !d.hay[i].includes(q)) continue;
      if (p === "__orig" && r[d.pcol] != null) continue;
      if (p !== "__all" && p !== "__orig" && r[d.pcol] !== p) continue;
      if (c !== "all") {
        const v = r[d.mcol];
        if (c === "correct" ? v !== 1 : (v == null || v >= 1)) continue;
      }
      out.push(i);
    }
    st.order = out; sortRows(); st.page = 0; render();
  }

  function sortRows() {
    if (st.sortCol < 0) return;
    const d = st.run, k = st.sortCol, dir = st.sortDir, num = d.kinds[k] === "num";
    st.order.sort((a, b) => {
      const x = d.rows[a][k], y = d.rows[b][k];
      if (x == null || y == null) return (x == null) - (y == null) || a - b;  // missing last, either direction
      const o = num ? x - y : (x < y ? -1 : x > y ? 1 : 0);
      return o * dir || a - b;
    });
  }

  function sortBy(k) {
    st.sortDir = st.sortCol === k ? -st.sortDir : 1; st.sortCol = k;
    sortRows(); st.page = 0; head(); render();
  }

  function pages() { return Math.max(1, Math.ceil(st.order.length / cfg.page_size)); }

  function render() {
    const d = st.run, body = $("inst-body"), frag = document.createDocumentFragment();
    const start = st.page * cfg.page_size, rows = st.order.slice(start, start + cfg.page_size);
    for (const i of rows) {
      const r = d.rows[i], tr = el("tr");
      tr.dataset.row = i;
      if (i === st.chosen) tr.classList.add("chosen");
      d.columns.forEach((c, k) => {
        const kind = d.kinds[k], v = r[k];
        if (c === "prompt" && v != null) {
          const td = el("td", "prompt"), det = el("details"), s = el("summary", null, `prompt (${v.length} chars)`);
          s.addEventListener("click", (e) => e.stopPropagation());
          det.append(s);
          det.addEventListener("toggle", () => { if (det.open && det.childNodes.length === 1) det.append(el("pre", null, v)); });
          td.append(det); tr.append(td);
        } else tr.append(el("td", kind === "num" ? "num" : "text", short(fmt(v, kind))));
      });
      tr.addEventListener("click", () => show(i));
      frag.append(tr);
    }
    body.textContent = "";
    if (!rows.length) { const tr = el("tr"), td = el("td", "empty", "no instances match"); td.colSpan = d.columns.length; tr.append(td); frag.append(tr); }
    body.append(frag);
    $("page-status").textContent = `page ${st.page + 1} of ${pages()} \u00b7 ${st.order.length} of ${d.rows.length} rows`;
    $("prev").disabled = st.page === 0; $("next").disabled = st.page >= pages() - 1;
  }

  function show(i) {
    const d = st.run, r = d.rows[i], box = $("detail-fields");
    st.chosen = i;
    for (const tr of $("inst-body").children) tr.classList.toggle("chosen", tr.dataset.row === String(i));
    box.textContent = "";
    d.columns.forEach((c, k) => {
      const f = el("div", "field");
      f.append(el("div", null, c), el("pre", null, fmt(r[k], d.kinds[k]) || "\u2014"));
      box.append(f);
    });
    $("detail-title").textContent = `instance ${r[0]}`;
    $("detail").hidden = false;
  }

  function go(delta) { st.page = Math.min(pages() - 1, Math.max(0, st.page + delta)); render(); }

  let timer = null;
  function init() {
    if (!cfg.runs.length) return;
    const sel = $("run-select");
    sel.addEventListener("change", () => chooseRun(Number(sel.value)));
    $("f-text").addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(apply, 150); });
    $("f-pert").addEventListener("change", apply);
    $("f-correct").addEventListener("change", apply);
    $("prev").addEventListener("click", () => go(-1));
    $("next").addEventListener("click", () => go(1));
    $("detail-close").addEventListener("click", () => { $("detail").hidden = true; });
    chooseRun(Number(sel.value));
  }
  // after the first paint: the summary tables show at once, the first run's rows a moment later
  requestAnimationFrame(() => setTimeout(init, 0));
})();
