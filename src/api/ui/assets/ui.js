// gatherd's dashboard: follows a running run live over the API's own
// server-sent events (/runs/{id}/events), folds the timeline's groups, and
// shows a focused bar's details. The pages work without it.
"use strict";
(function () {
  function $(sel, root) { return (root || document).querySelector(sel); }
  function esc(s) { return window.CSS && CSS.escape ? CSS.escape(s) : s.replace(/["\\]/g, "\\$&"); }
  function fmt(ms) {
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    if (ms < 3600000) return Math.floor(ms / 60000) + " min " + Math.floor(ms % 60000 / 1000) + " s";
    return Math.floor(ms / 3600000) + " h " + Math.floor(ms % 3600000 / 60000) + " min";
  }
  var SVGNS = "http://www.w3.org/2000/svg";

  // --- the timeline: layout, folding, details of the focused bar ---
  var svg = $("svg#timeline");
  var run = $("#run");
  function geometry() {
    return {
      left: parseFloat(svg.dataset.left), axis: parseFloat(svg.dataset.axis),
      total: Math.max(parseFloat(svg.dataset.total) || 1, 1), row: parseFloat(svg.dataset.row)
    };
  }
  function place(bar, nowMs) {
    var g = geometry();
    var start = parseFloat(bar.dataset.start || "0");
    var end = bar.dataset.end !== undefined ? parseFloat(bar.dataset.end) : nowMs;
    if (!(end >= start)) end = start;
    bar.setAttribute("x", (g.left + start * g.axis / g.total).toFixed(3));
    bar.setAttribute("width", ((end - start) * g.axis / g.total).toFixed(3));
  }
  function relayout() {
    if (!svg) return;
    var g = geometry(), y = 22;
    svg.querySelectorAll("g.rows > g.row").forEach(function (row) {
      if (row.classList.contains("hidden")) return;
      row.setAttribute("transform", "translate(0 " + y + ")");
      y += g.row;
    });
    svg.setAttribute("height", y + 6);
    svg.setAttribute("viewBox", "0 0 " + svg.getAttribute("width") + " " + (y + 6));
  }
  function rescaleAxis(totalMs) {
    var g = geometry();
    svg.dataset.total = String(totalMs);
    var texts = svg.querySelectorAll("g.axis text.tick");
    texts.forEach(function (t, k) { t.textContent = fmt(Math.round(totalMs * k / (texts.length - 1 || 1))); });
    void g;
  }
  if (svg) {
    svg.addEventListener("click", function (e) {
      var label = e.target.closest && e.target.closest("text.label.group");
      if (!label) return;
      var row = label.parentNode, path = row.dataset.path, fold = !row.classList.contains("collapsed");
      row.classList.toggle("collapsed", fold);
      svg.querySelectorAll("g.row").forEach(function (r) {
        var p = r.dataset.path;
        if (p.indexOf(path + "/") === 0) r.classList.toggle("hidden", fold);
      });
      relayout();
    });
    svg.addEventListener("keydown", function (e) {
      if (e.key !== "Enter" && e.key !== " ") return;
      var bar = e.target.closest && e.target.closest("rect.bar[data-kind=group]");
      if (!bar) return;
      e.preventDefault();
      var label = bar.parentNode.querySelector("text.label.group");
      if (label) label.dispatchEvent(new MouseEvent("click", { bubbles: true }));
    });
    var info = $("#bar-info");
    var show = function (e) {
      var bar = e.target.closest && e.target.closest("rect.bar");
      if (bar && info) info.textContent = bar.getAttribute("aria-label");
    };
    svg.addEventListener("focusin", show);
    svg.addEventListener("mouseover", show);
  }

  // --- live: follow a running run ---
  if (!run || run.dataset.live !== "true" || !window.EventSource) return;
  var id = run.dataset.run;
  var paged = run.dataset.paged === "true" || (svg && svg.dataset.aggregated === "true");
  var shownAt = performance.now();
  var elapsedAtRender = parseFloat(run.dataset.elapsed || "0");
  function nowMs() { return elapsedAtRender + (performance.now() - shownAt); }
  var finished = false;

  function setStatus(word) {
    var s = $("#run-status");
    if (!s) return;
    s.textContent = word;
    s.dataset.status = word;
  }
  function growRunning() {
    if (!svg || paged) return;
    var now = nowMs();
    if (now > geometry().total) rescaleAxis(Math.ceil(now * 1.1));
    svg.querySelectorAll("rect.bar").forEach(function (b) { place(b, now); });
  }
  function ensureBar(path, name, kind, startMs) {
    if (!svg || paged) return null;
    var bar = svg.querySelector('rect.bar[data-path="' + esc(path) + '"]');
    if (bar) return bar;
    var depth = (path.match(/\//g) || []).length;
    var row = document.createElementNS(SVGNS, "g");
    row.setAttribute("class", "row");
    row.dataset.path = path;
    row.dataset.depth = String(depth);
    var label = document.createElementNS(SVGNS, "text");
    label.setAttribute("class", "label" + (kind === "group" ? " group" : ""));
    label.setAttribute("x", String(4 + 12 * Math.min(depth, 12)));
    label.setAttribute("y", "12");
    label.textContent = name;
    bar = document.createElementNS(SVGNS, "rect");
    bar.setAttribute("class", "bar");
    bar.dataset.path = path;
    bar.dataset.kind = kind;
    bar.dataset.status = "running";
    bar.dataset.start = String(startMs || 0);
    bar.setAttribute("y", "2");
    bar.setAttribute("height", "12");
    bar.setAttribute("tabindex", "0");
    bar.setAttribute("role", "img");
    var title = document.createElementNS(SVGNS, "title");
    bar.appendChild(title);
    row.appendChild(label);
    row.appendChild(bar);
    // After its parent's last descendant, so groups stay nested.
    var rows = svg.querySelector("g.rows"), after = null, parent = path.replace(/\/[^\/]*$/, "");
    rows.querySelectorAll("g.row").forEach(function (r) {
      if (r.dataset.path === parent || r.dataset.path.indexOf(parent + "/") === 0) after = r;
    });
    rows.insertBefore(row, after ? after.nextSibling : null);
    relayout();
    return bar;
  }
  function label(bar, text) {
    bar.setAttribute("aria-label", text);
    var t = bar.querySelector("title");
    if (t) t.textContent = text;
  }
  function stepRow(path) {
    return $('table#steps tr[data-path="' + esc(path) + '"]');
  }
  function ensureRow(path, name, kind) {
    if (paged) return null;
    var tr = stepRow(path);
    if (tr) return tr;
    tr = document.createElement("tr");
    tr.dataset.path = path;
    tr.dataset.kind = kind === "group" ? "group" : "step";
    var th = document.createElement("th");
    th.scope = "row";
    th.textContent = name + " ";
    var p = document.createElement("span");
    p.className = "path";
    p.textContent = path;
    th.appendChild(p);
    tr.appendChild(th);
    ["kind", "status", "start", "took", "attempts", "error"].forEach(function (c) {
      var td = document.createElement("td");
      td.className = c;
      tr.appendChild(td);
    });
    var body = $("table#steps tbody");
    if (body) body.appendChild(tr);
    return tr;
  }
  function cell(tr, cls, text) {
    var td = tr && tr.querySelector("td." + cls);
    if (td) td.textContent = text;
    return td;
  }
  function appendLine(pre, text, stream, prefix) {
    var span = document.createElement("span");
    span.className = "line";
    if (/^… .* dropped.* …$/.test(text)) span.className += " marker";
    span.dataset.stream = stream;
    span.textContent = (prefix || "") + text + "\n";
    var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(span);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  }
  function outputPre(path) {
    var pre = $('pre.output[data-path="' + esc(path) + '"]');
    if (pre || paged) return pre;
    var box = document.createElement("div");
    box.className = "output-box";
    var h = document.createElement("h3");
    h.textContent = path;
    pre = document.createElement("pre");
    pre.className = "output";
    pre.dataset.path = path;
    box.appendChild(h);
    box.appendChild(pre);
    var none = $("#no-output");
    if (none) none.remove();
    var section = $("#outputs");
    var pager = section && section.querySelector("nav.pager");
    if (section) section.insertBefore(box, pager);
    return pre;
  }

  var handlers = {
    node_started: function (d) {
      var kind = /^(gather|as_completed|race|sequence|script)$/.test(d.kind) ? "group" : "step";
      var bar = ensureBar(d.path, d.name, kind, d.start_ms);
      if (bar) { label(bar, d.path + " (" + d.kind + ") — running"); place(bar, nowMs()); }
      var tr = ensureRow(d.path, d.name, kind);
      if (tr) { tr.dataset.status = "running"; cell(tr, "kind", d.kind); var s = cell(tr, "status", "running"); if (s) s.dataset.status = "running"; cell(tr, "start", fmt(d.start_ms || 0)); }
    },
    attempt_failed: function (d) {
      var tr = stepRow(d.path);
      cell(tr, "attempts", String(d.attempt + 1));
      var bar = svg && svg.querySelector('rect.bar[data-path="' + esc(d.path) + '"]');
      if (bar && !paged) {
        var g = geometry(), from = parseFloat(bar.dataset.segment || bar.dataset.start || "0");
        var seg = document.createElementNS(SVGNS, "rect");
        seg.setAttribute("class", "attempt");
        seg.dataset.attempt = String(d.attempt);
        seg.dataset.from = String(from);
        seg.dataset.to = String(d.at_ms);
        seg.setAttribute("x", (g.left + from * g.axis / g.total).toFixed(3));
        seg.setAttribute("y", "2");
        seg.setAttribute("height", "12");
        seg.setAttribute("width", ((d.at_ms - from) * g.axis / g.total).toFixed(3));
        bar.parentNode.appendChild(seg);
        bar.dataset.segment = String(d.at_ms);
      }
    },
    node_finished: function (d) {
      var kind = /^(gather|as_completed|race|sequence|script)$/.test(d.kind) ? "group" : "step";
      var bar = ensureBar(d.path, d.name, kind, d.start_ms);
      if (bar) {
        bar.dataset.status = d.status;
        if (d.start_ms !== null && d.start_ms !== undefined) bar.dataset.start = String(d.start_ms);
        bar.dataset.end = String(d.end_ms !== null && d.end_ms !== undefined ? d.end_ms : d.start_ms || 0);
        var text = d.path + " (" + d.kind + ") — " + d.status + ": " + fmt(d.start_ms || 0) + " → " + fmt(d.end_ms || 0) +
          " (" + fmt((d.end_ms || 0) - (d.start_ms || 0)) + ")" + (d.attempts > 1 ? "; " + d.attempts + " attempts" : "") +
          (d.error ? "; error: " + d.error.split("\n")[0] : "");
        label(bar, text);
        place(bar, nowMs());
      }
      var tr = ensureRow(d.path, d.name, kind);
      if (tr) {
        tr.dataset.status = d.status;
        cell(tr, "kind", d.kind);
        var s = cell(tr, "status", d.status);
        if (s) s.dataset.status = d.status;
        if (d.start_ms !== null && d.start_ms !== undefined) cell(tr, "start", fmt(d.start_ms));
        if (d.end_ms !== null && d.start_ms !== null) cell(tr, "took", fmt(d.end_ms - d.start_ms));
        cell(tr, "attempts", String(d.attempts));
        cell(tr, "error", d.error || "");
      }
    },
    output: function (d) {
      var pre = outputPre(d.path);
      if (pre) appendLine(pre, d.text, d.stream);
    },
    log: function (d) {
      var pre = $("pre#log");
      var none = $("#no-log");
      if (none) none.remove();
      if (pre) appendLine(pre, d.text, d.stream, "[" + d.path + "] ");
    },
    run_finished: function (d) {
      finished = true;
      setStatus(d.status);
      var form = $("#cancel-form");
      if (form) form.remove();
      if (d.duration_ms !== null && d.duration_ms !== undefined) {
        var took = $("#run-took");
        if (took) took.textContent = fmt(d.duration_ms);
        if (svg && !paged) {
          var total = Math.max(d.duration_ms, 1);
          svg.querySelectorAll("rect.bar").forEach(function (b) {
            var end = b.dataset.end !== undefined ? parseFloat(b.dataset.end) : 0;
            if (end > total) total = end;
          });
          rescaleAxis(total);
          svg.querySelectorAll("rect.bar").forEach(function (b) { place(b, total); });
          svg.querySelectorAll("rect.attempt").forEach(function (s) {
            var g = geometry(), from = parseFloat(s.dataset.from || "NaN"), to = parseFloat(s.dataset.to || "NaN");
            if (isNaN(from) || isNaN(to)) return;
            s.setAttribute("x", (g.left + from * g.axis / g.total).toFixed(3));
            s.setAttribute("width", ((to - from) * g.axis / g.total).toFixed(3));
          });
        }
      }
      if (d.error) {
        var err = $("#run-error");
        if (err) err.textContent = d.error;
      }
    }
  };
  ["node_started"].forEach(function () {});
  var source = new EventSource("/runs/" + encodeURIComponent(id) + "/events?from=" + encodeURIComponent(run.dataset.from || "0"));
  Object.keys(handlers).forEach(function (kind) {
    source.addEventListener(kind, function (e) {
      var data;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      if (kind === "run_started") return;
      handlers[kind](data);
      if (finished) source.close();
    });
  });
  source.addEventListener("run_started", function () { setStatus("running"); });
  // Statuses a queued run moves through before its first event.
  source.onopen = function () { if ($("#run-status").dataset.status === "queued") { /* stays until run_started */ } };
  source.onerror = function () { if (finished) source.close(); };
  var ticker = setInterval(function () { if (finished) { clearInterval(ticker); return; } growRunning(); }, 250);
})();
