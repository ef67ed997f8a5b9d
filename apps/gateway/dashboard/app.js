// The llmq-gateway dashboard: reads GET /stats every second (docs/dashboard.md) and
// draws it. Plain DOM and canvas, nothing loaded from elsewhere. Every value from the
// server is put in the page as text (textContent), never as markup.
"use strict";

(function () {
  // The key, if any, comes from the address's fragment (#key=...): a fragment is not
  // sent to the server, so the key stays out of request lines and access logs.
  function keyFromFragment() {
    const m = /(?:^#|&)key=([^&]*)/.exec(window.location.hash || "");
    if (!m) return "";
    try { return decodeURIComponent(m[1]); } catch (e) { return ""; }
  }
  const key = keyFromFragment();

  function $(id) { return document.getElementById(id); }
  function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }
  function fmt(v) {
    v = num(v);
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (Math.abs(v) >= 1e4) return (v / 1e3).toFixed(1) + "k";
    return Number.isInteger(v) ? String(v) : v.toFixed(3);
  }
  function text(el, v) { el.textContent = v; return el; }
  function cell(row, v) { return text(row.insertCell(), v); }

  function bar(used, limit) {
    const box = document.createElement("div");
    box.className = "bar";
    const fill = document.createElement("div");
    const share = limit > 0 ? Math.min(1, used / limit) : 0;
    fill.className = share >= 0.9 ? "fill high" : "fill";
    fill.style.width = (share * 100).toFixed(1) + "%";
    const label = document.createElement("span");
    label.className = "text";
    text(label, fmt(used) + " / " + fmt(limit));
    box.appendChild(fill);
    box.appendChild(label);
    return box;
  }

  function fillTable(id, rows, columns) {
    const body = $(id).tBodies[0];
    while (body.rows.length) body.deleteRow(0);
    for (const r of rows) {
      const tr = body.insertRow();
      for (const c of columns) {
        const v = c(r);
        if (v instanceof Node) tr.insertCell().appendChild(v); else cell(tr, v);
      }
    }
  }

  function drawChart(samples) {
    const canvas = $("chart");
    const ratio = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 1200, h = canvas.clientHeight || 220;
    canvas.width = Math.round(w * ratio);
    canvas.height = Math.round(h * ratio);
    const g = canvas.getContext("2d");
    g.setTransform(ratio, 0, 0, ratio, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 44, right = 10, top = 10, bottom = 22;
    let max = 1;
    for (const s of samples) max = Math.max(max, num(s.depth), num(s.in_flight));
    const span = Math.max(1, samples.length - 1);
    const x = (i) => left + (w - left - right) * (i / span);
    const y = (v) => top + (h - top - bottom) * (1 - v / max);
    g.strokeStyle = "#dfe1e6";
    g.fillStyle = "#6b7080";
    g.font = "11px system-ui, sans-serif";
    g.lineWidth = 1;
    for (let k = 0; k <= 4; ++k) {
      const v = (max * k) / 4;
      g.beginPath();
      g.moveTo(left, y(v));
      g.lineTo(w - right, y(v));
      g.stroke();
      g.fillText(fmt(Math.round(v)), 4, y(v) + 4);
    }
    if (samples.length > 0) {
      const first = num(samples[0].t), last = num(samples[samples.length - 1].t);
      g.fillText("-" + Math.round(last - first) + " s", left, h - 6);
      g.fillText("now", w - right - 22, h - 6);
    }
    function line(field, color) {
      g.strokeStyle = color;
      g.lineWidth = 2;
      g.beginPath();
      samples.forEach((s, i) => (i ? g.lineTo(x(i), y(num(s[field]))) : g.moveTo(x(i), y(num(s[field])))));
      g.stroke();
    }
    line("depth", "#2f6fdf");
    line("in_flight", "#e0862b");
  }

  function render(s) {
    const q = s.queue || {};
    text($("depth"), fmt(q.depth));
    text($("in-flight"), fmt(q.in_flight));
    text($("admitted"), fmt(q.admitted));
    text($("completed"), fmt(q.completed));
    let refused = 0;
    for (const v of Object.values(q.refused || {})) refused += num(v);
    text($("refused"), fmt(refused));
    text($("updated"), "at " + new Date(num(s.time) * 1000).toISOString());
    const samples = Array.isArray(s.samples) ? s.samples : [];
    text($("window"), "(last " + samples.length + " s)");
    drawChart(samples);

    fillTable("deployments", Array.isArray(s.deployments) ? s.deployments : [], [
      (d) => String(d.name),
      (d) => String(d.model),
      (d) => fmt(d.weight),
      (d) => bar(num(d.rpm_used), num(d.rpm_limit)),
      (d) => bar(num(d.tpm_used), num(d.tpm_limit)),
      (d) => {
        const b = d.backoff || {};
        if (!b.active) return "-";
        const span = document.createElement("span");
        span.className = "backoff";
        return text(span, num(b.remaining_seconds).toFixed(1) + " s");
      },
      (d) => fmt(d.requests),
      (d) => fmt(d.throttled_429),
      (d) => fmt(d.paced),
      (d) => fmt(d.failures),
    ]);
    const users = s.users || {};
    const userColumns = [(u) => String(u.user), (u) => fmt(u.admitted), (u) => fmt(u.refused)];
    fillTable("top-admitted", Array.isArray(users.top_admitted) ? users.top_admitted : [], userColumns);
    fillTable("top-refused", Array.isArray(users.top_refused) ? users.top_refused : [], userColumns);
    const lat = s.latency || {};
    const rows = [];
    for (const name of ["queue_wait", "upstream", "total"])
      if (lat[name]) rows.push([name.replace("_", " "), lat[name]]);
    const ms = (v) => (num(v) * 1000).toFixed(1);
    fillTable("latency", rows, [
      (r) => r[0], (r) => ms(r[1].p50), (r) => ms(r[1].p90), (r) => ms(r[1].p99),
      (r) => fmt(r[1].count),
    ]);
  }

  function setStatus(cls, message) {
    const el = $("status");
    el.className = "status " + cls;
    text(el, message);
  }

  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const headers = key ? { Authorization: "Bearer " + key } : {};
      const r = await fetch("/stats", { headers: headers, cache: "no-store" });
      if (r.status === 401) {
        setStatus("error", "401: open /dashboard#key=YOUR_KEY");
      } else if (!r.ok) {
        setStatus("error", "HTTP " + r.status);
      } else {
        render(await r.json());
        setStatus("ok", "live");
      }
    } catch (e) {
      setStatus("error", "gateway unreachable");
    } finally {
      busy = false;
    }
  }

  refresh();
  setInterval(refresh, 1000);
})();
