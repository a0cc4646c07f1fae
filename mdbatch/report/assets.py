"""The report's stylesheet and script, inlined into every page (no CDN, nothing fetched).

The script renders the tables from the embedded JSON with DOM text nodes only (never innerHTML),
paginated, so a 100,000-row table costs one page of DOM; filtering and sorting work on an index
array. Every table (and every static one marked `data-csv`) gets a "Download CSV" data: link built
from the page's own data (the rows in view, all pages): nothing is fetched. It records
`data-rendered`, `data-render-ms` and `data-errors` on <html> for tests and measurements, and
exposes `window.mdbatchReport.tables`.
"""

from __future__ import annotations

CSS = """
:root{--fg:#1d2733;--muted:#5b6b7b;--line:#d9e0e7;--bg:#f5f7f9;--card:#fff;--accent:#3b7dd8;
--ok:#1b7f4b;--bad:#b42318;--warn:#a15c00}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 "DejaVu Sans",system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{background:#14213d;color:#fff;padding:18px 28px 14px}
header h1{margin:0 0 4px;font-size:20px;font-weight:600}
header .meta{color:#c9d3e0;font-size:13px;word-break:break-all}
nav{display:flex;flex-wrap:wrap;gap:4px 16px;padding:8px 28px;background:#fff;border-bottom:1px solid var(--line);
position:sticky;top:0;z-index:2}
nav a{color:var(--accent);text-decoration:none;font-size:13px}
main{padding:18px 28px 40px;max-width:1500px}
section{margin:0 0 26px}
h2{font-size:17px;margin:0 0 10px;font-weight:600}
h3{font-size:14px;margin:0 0 6px;font-weight:600}
.verdict{display:inline-block;margin-top:10px;padding:5px 12px;border-radius:4px;font-weight:600;font-size:14px}
.verdict.clean{background:#d1fadf;color:var(--ok)}.verdict.findings{background:#fee4e2;color:var(--bad)}
.verdict.incomplete{background:#fef0c7;color:var(--warn)}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(150px,1fr));gap:10px}
.cards.wide{grid-template-columns:repeat(auto-fill,minmax(230px,1fr))}
h3.gap{margin-top:14px}
.card{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:10px 14px}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;margin-top:2px;white-space:nowrap}
.card .s{color:var(--muted);font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:14px}
.panel{background:var(--card);border:1px solid var(--line);border-radius:6px;padding:12px 14px;min-width:0}
.panel p.note{color:var(--muted);font-size:12px;margin:6px 0 0}
svg.chart{display:block;max-width:680px;font-size:12px}
svg .lbl{fill:var(--fg)}svg .val{fill:var(--muted)}svg .grid{stroke:var(--line)}
.empty{color:var(--muted);font-style:italic}
table{border-collapse:collapse;width:100%;font-size:13px;background:var(--card)}
th,td{border-bottom:1px solid var(--line);padding:4px 8px;text-align:left;vertical-align:top}
td{max-width:34em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}
thead th{position:sticky;top:0;background:#eef2f6;z-index:1;white-space:nowrap}
th button{all:unset;cursor:pointer;font-weight:600}
th[aria-sort=ascending] button::after{content:" \\25B2";font-size:10px}
th[aria-sort=descending] button::after{content:" \\25BC";font-size:10px}
.mono,td.mono{font-family:"DejaVu Sans Mono",ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.scroll{overflow:auto;max-height:70vh;border:1px solid var(--line);border-radius:6px}
.controls{display:flex;flex-wrap:wrap;gap:8px;align-items:center;margin:0 0 8px}
.controls input[type=search]{min-width:260px;padding:5px 8px;border:1px solid var(--line);border-radius:4px;font:inherit}
.controls select{padding:4px;border:1px solid var(--line);border-radius:4px;font:inherit;max-width:220px}
.controls button,.pager button{padding:3px 9px;border:1px solid var(--line);border-radius:4px;background:#fff;cursor:pointer;font:inherit}
.controls button:disabled,.pager button:disabled{opacity:.45;cursor:default}
.chip{background:#e4ecf7;border-radius:12px;padding:2px 4px 2px 10px;font-size:12px}
.pager{display:flex;gap:6px;align-items:center;margin-top:8px;color:var(--muted);font-size:13px;flex-wrap:wrap}
button.link{all:unset;color:var(--accent);cursor:pointer;text-decoration:underline}
.changes td.n{min-width:5em}
a.csv{color:var(--accent);font-size:13px;margin-left:auto}
table[data-csv]+a.csv{display:inline-block;margin-top:6px}
tr.current td{font-weight:600;background:#f0f5fc}
svg .axis{fill:var(--muted);font-size:12px}
.notes{background:#fff8e6;border:1px solid #f3d9a4;border-radius:6px;padding:8px 14px;font-size:13px}
footer{color:var(--muted);font-size:12px;padding:0 28px 24px}
"""

JS = r"""
(function () {
  "use strict";
  var doc = document, root = doc.documentElement, errors = 0;
  root.setAttribute("data-errors", "0");
  window.addEventListener("error", function () { errors += 1; root.setAttribute("data-errors", String(errors)); });
  var data = JSON.parse(doc.getElementById("report-data").textContent);
  var UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
  function digits(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ","); }
  function bytes(n) {
    var v = n, u = 0;
    while (Math.abs(v) >= 1024 && u < UNITS.length - 1) { v /= 1024; u += 1; }
    return u === 0 ? v + " B" : v.toFixed(1) + " " + UNITS[u];
  }
  function shown(kind, v) {
    if (v === null || v === undefined) return "";
    return kind === "num" ? digits(v) : kind === "bytes" ? bytes(v) : String(v);
  }
  function make(tag, cls, text) {
    var e = doc.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function numeric(col) { return col.kind === "num" || col.kind === "bytes"; }
  // A text cell that a spreadsheet would run as a formula is prefixed with ' (CSV injection).
  var FORMULA = /^[=+\-@\t\r]/;
  function csvCell(v, isNumber) {
    if (v === null || v === undefined) return "";
    var s = String(v);
    if (!isNumber && FORMULA.test(s)) s = "'" + s;
    return /[",\r\n]/.test(s) ? '"' + s.replace(/"/g, '""') + '"' : s;
  }
  function wellFormed(s) {
    if (s.toWellFormed) return s.toWellFormed();
    return s.replace(/[\uD800-\uDBFF][\uDC00-\uDFFF]|[\uD800-\uDFFF]/g, function (m) { return m.length === 2 ? m : "\uFFFD"; });
  }
  function csvHref(text) { return "data:text/csv;charset=utf-8," + encodeURIComponent(wellFormed(text)); }
  // Rows up to which a table's link is built with every change of view (so "save link as" works);
  // above, it is built when clicked, so a 100,000-row table costs nothing until it is asked for.
  var EAGER_CSV = 2000;
  function csvLink(name, build) {
    var a = make("a", "csv", "Download CSV");
    a.download = name + "-" + data.run + ".csv";
    a.href = "#";
    a.addEventListener("click", function () { a.href = csvHref(build()); });
    return a;
  }

  function Table(host, spec, options) {
    var self = this;
    this.cols = spec.columns;
    this.rows = spec.rows;
    this.total = spec.total;
    this.options = options || {};
    this.link = -1;
    for (var l = 0; l < this.cols.length; l++) if (this.cols[l].key === this.options.linkKey) this.link = l;
    Object.keys(spec.dicts).forEach(function (key) {
      var dict = spec.dicts[key], c = Number(key), rows = self.rows;
      for (var i = 0; i < rows.length; i++) rows[i][c] = dict[rows[i][c]];
    });
    this.view = [];
    this.page = 0;
    this.size = 50;
    this.sortCol = -1;
    this.sortDir = 1;
    this.query = "";
    this.hay = null;
    this.selects = {};
    this.exact = null;
    this.mark = this.options.highlight ? this.col(this.options.highlight.key) : -1;
    this.build(host);
    if (this.options.sort) {
      this.sortCol = this.col(this.options.sort.key);
      this.sortDir = this.options.sort.dir;
      this.heads[this.sortCol].setAttribute("aria-sort", this.sortDir > 0 ? "ascending" : "descending");
    }
    this.apply();
  }

  Table.prototype.col = function (key) {
    for (var c = 0; c < this.cols.length; c++) if (this.cols[c].key === key) return c;
    return -1;
  };

  Table.prototype.csv = function () {
    var cols = this.cols, rows = this.rows, view = this.view;
    var lines = [cols.map(function (col) { return csvCell(col.key, false); }).join(",")];
    for (var i = 0; i < view.length; i++) {
      var row = rows[view[i]], cells = new Array(cols.length);
      for (var c = 0; c < cols.length; c++) cells[c] = csvCell(row[c], numeric(cols[c]));
      lines.push(cells.join(","));
    }
    return lines.join("\r\n") + "\r\n";
  };

  Table.prototype.build = function (host) {
    var self = this, controls = make("div", "controls");
    this.search = make("input");
    this.search.type = "search";
    this.search.placeholder = "Filter (any column)\u2026";
    this.search.setAttribute("aria-label", "Filter rows");
    var timer = null;
    this.search.addEventListener("input", function () {
      clearTimeout(timer);
      timer = setTimeout(function () { self.query = self.search.value.trim().toLowerCase(); self.apply(); }, 150);
    });
    controls.appendChild(this.search);
    this.cols.forEach(function (col, c) {
      if (col.kind !== "cat") return;
      var values = {};
      for (var i = 0; i < self.rows.length; i++) values[self.rows[i][c]] = true;
      var keys = Object.keys(values).sort();
      if (keys.length < 2 || keys.length > 300) return;
      var select = make("select");
      select.setAttribute("aria-label", col.label);
      select.appendChild(make("option", null, col.label + ": all"));
      keys.forEach(function (k) { var o = make("option", null, k); o.value = k; select.appendChild(o); });
      select.options[0].value = "\u0000all";
      select.addEventListener("change", function () {
        if (select.value === "\u0000all") delete self.selects[c]; else self.selects[c] = select.value;
        self.apply();
      });
      controls.appendChild(select);
    });
    this.chip = make("span", "chip");
    this.chip.hidden = true;
    controls.appendChild(this.chip);
    this.download = csvLink(this.options.name || "table", function () { return self.csv(); });
    controls.appendChild(this.download);
    host.appendChild(controls);
    var scroll = make("div", "scroll"), table = make("table"), thead = make("thead"), tr = make("tr");
    this.heads = this.cols.map(function (col, c) {
      var th = make("th", numeric(col) ? "n" : null), button = make("button", null, col.label);
      button.type = "button";
      button.addEventListener("click", function () { self.sortBy(c); });
      th.appendChild(button);
      tr.appendChild(th);
      return th;
    });
    thead.appendChild(tr);
    table.appendChild(thead);
    this.tbody = make("tbody");
    table.appendChild(this.tbody);
    scroll.appendChild(table);
    host.appendChild(scroll);
    this.tbody.addEventListener("click", function (event) {
      var target = event.target;
      if (target && target.classList && target.classList.contains("link") && self.options.onLink) {
        self.options.onLink(self.rows[Number(target.getAttribute("data-row"))]);
      }
    });
    var pager = make("div", "pager");
    this.buttons = ["\u00ab First", "\u2039 Prev", "Next \u203a", "Last \u00bb"].map(function (label, i) {
      var b = make("button", null, label);
      b.type = "button";
      b.addEventListener("click", function () {
        var last = Math.max(0, Math.ceil(self.view.length / self.size) - 1);
        self.page = [0, Math.max(0, self.page - 1), Math.min(last, self.page + 1), last][i];
        self.render();
      });
      pager.appendChild(b);
      return b;
    });
    this.info = make("span");
    pager.appendChild(this.info);
    var size = make("select");
    size.setAttribute("aria-label", "Rows per page");
    [25, 50, 100, 500].forEach(function (n) {
      var o = make("option", null, n + " per page");
      o.value = String(n);
      if (n === self.size) o.selected = true;
      size.appendChild(o);
    });
    size.addEventListener("change", function () { self.size = Number(size.value); self.page = 0; self.render(); });
    pager.appendChild(size);
    host.appendChild(pager);
  };

  // Keep only the rows equal to every [column index, value] of `pairs` (null: all rows).
  Table.prototype.setExact = function (pairs) {
    var self = this;
    this.exact = pairs && pairs.length ? pairs : null;
    this.chip.textContent = "";
    this.chip.hidden = this.exact === null;
    if (this.exact) {
      var text = this.exact.map(function (p) { return self.cols[p[0]].label + " = " + p[1]; }).join(", ");
      this.chip.appendChild(doc.createTextNode(text + " "));
      var clear = make("button", null, "\u2715");
      clear.type = "button";
      clear.setAttribute("aria-label", "Clear");
      clear.addEventListener("click", function () { self.setExact(null); });
      this.chip.appendChild(clear);
    }
    this.apply();
  };

  Table.prototype.apply = function () {
    var rows = this.rows, n = rows.length, q = this.query, ex = this.exact, sel = this.selects;
    var keys = Object.keys(sel).map(Number), out = [];
    if (q && !this.hay) {
      this.hay = new Array(n);
      for (var h = 0; h < n; h++) this.hay[h] = rows[h].join("\u0001").toLowerCase();
    }
    for (var i = 0; i < n; i++) {
      var r = rows[i], ok = true;
      for (var k = 0; k < keys.length && ok; k++) ok = r[keys[k]] === sel[keys[k]];
      for (var e = 0; ex && e < ex.length && ok; e++) ok = r[ex[e][0]] === ex[e][1];
      if (ok && q) ok = this.hay[i].indexOf(q) >= 0;
      if (ok) out.push(i);
    }
    this.view = out;
    this.sortView();
    this.page = 0;
    this.render();
  };

  Table.prototype.sortBy = function (c) {
    if (this.sortCol === c) this.sortDir = -this.sortDir;
    else { this.sortCol = c; this.sortDir = numeric(this.cols[c]) ? -1 : 1; }
    var self = this;
    this.heads.forEach(function (th, i) {
      if (i === self.sortCol) th.setAttribute("aria-sort", self.sortDir > 0 ? "ascending" : "descending");
      else th.removeAttribute("aria-sort");
    });
    this.sortView();
    this.page = 0;
    this.render();
  };

  Table.prototype.sortView = function () {
    if (this.sortCol < 0) return;
    var c = this.sortCol, dir = this.sortDir, rows = this.rows, num = numeric(this.cols[c]);
    this.view.sort(function (a, b) {
      var x = rows[a][c], y = rows[b][c];
      if (x === y) return a - b;
      if (x === null || x === "") return 1;
      if (y === null || y === "") return -1;
      return (num ? (x - y) * dir : (x < y ? -dir : dir)) || a - b;
    });
  };

  Table.prototype.render = function () {
    var view = this.view, start = this.page * this.size, end = Math.min(start + this.size, view.length);
    var frag = doc.createDocumentFragment(), cols = this.cols, link = this.link;
    for (var i = start; i < end; i++) {
      var row = this.rows[view[i]], tr = make("tr", this.mark >= 0 && row[this.mark] === this.options.highlight.value ? "current" : null);
      for (var c = 0; c < cols.length; c++) {
        var col = cols[c], v = row[c], td = make("td", numeric(col) ? "n" : col.mono ? "mono" : null);
        if (c === link && v) {
          var b = make("button", "link", shown(col.kind, v));
          b.type = "button";
          b.setAttribute("data-row", String(view[i]));
          td.appendChild(b);
        } else {
          var text = shown(col.kind, v);
          td.textContent = col.short && text.length > col.short ? text.slice(0, col.short) + "\u2026" : text;
        }
        if (col.kind === "bytes" && v !== null) td.title = digits(v) + " bytes";
        else if (typeof v === "string" && (v.length > 30 || (col.short && v.length > col.short))) td.title = v;
        tr.appendChild(td);
      }
      frag.appendChild(tr);
    }
    if (end <= start) {
      var empty = make("td", "empty", this.rows.length ? "No matching rows." : "None.");
      empty.colSpan = cols.length;
      frag.appendChild(make("tr")).appendChild(empty);
    }
    this.tbody.textContent = "";
    this.tbody.appendChild(frag);
    var last = Math.max(1, Math.ceil(view.length / this.size));
    var text = view.length ? "Rows " + digits(start + 1) + "\u2013" + digits(end) + " of " + digits(view.length) : "0 rows";
    if (view.length !== this.rows.length) text += " (filtered from " + digits(this.rows.length) + ")";
    if (this.total > this.rows.length) text += "; " + digits(this.total) + " in the catalog";
    this.info.textContent = text + " \u00b7 page " + digits(this.page + 1) + " of " + digits(last);
    this.download.textContent = "Download CSV (" + digits(view.length) + " row" + (view.length === 1 ? "" : "s") + ")";
    if (view.length <= EAGER_CSV) this.download.href = csvHref(this.csv());
    else this.download.href = "#";
    this.buttons[0].disabled = this.buttons[1].disabled = this.page === 0;
    this.buttons[2].disabled = this.buttons[3].disabled = this.page >= last - 1;
  };

  var tables = {};
  function mount(name, options) {
    var host = doc.getElementById("table-" + name);
    options = options || {};
    options.name = name;
    if (host && data.tables[name]) tables[name] = new Table(host, data.tables[name], options);
  }
  var GROUP = ["simulation_type", "parametrization", "status", "item_type", "item_name"];
  mount("lacking");
  mount("completeness", {
    linkKey: "lacking",
    onLink: function (row) {
      var lacking = tables.lacking, from = tables.completeness;
      if (!lacking) return;
      lacking.setExact(GROUP.map(function (key) { return [lacking.col(key), row[from.col(key)]]; }));
      doc.getElementById("lacking").scrollIntoView();
    }
  });
  mount("findings");
  mount("changes");
  mount("simulations", {
    sort: { key: "findings", dir: -1 },
    linkKey: "findings",
    onLink: function (row) {
      if (!tables.findings) return;
      tables.findings.setExact([[0, row[0]]]);
      doc.getElementById("findings").scrollIntoView();
    }
  });
  mount("duplicates");
  mount("history", { highlight: { key: "run_id", value: data.run } });
  Array.prototype.forEach.call(doc.querySelectorAll("table[data-csv]"), function (table) {
    var lines = Array.prototype.map.call(table.rows, function (tr) {
      return Array.prototype.map.call(tr.cells, function (td) {
        var number = td.classList.contains("n");
        return csvCell(number ? td.textContent.replace(/,/g, "") : td.textContent, number);
      }).join(",");
    });
    var text = lines.join("\r\n") + "\r\n", link = csvLink(table.getAttribute("data-csv"), function () { return text; });
    link.href = csvHref(text);
    table.parentNode.insertBefore(link, table.nextSibling);
  });
  window.mdbatchReport = { tables: tables };
  var ms = performance.now();
  root.setAttribute("data-render-ms", ms.toFixed(0));
  root.setAttribute("data-rendered", "1");
})();
"""
