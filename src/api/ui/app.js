// tend's web view. Reads the ordinary API with the bearer token taken from the URL fragment
// (never sent to the server as part of a URL) and builds the page from text nodes only: any
// field of any object is shown as text, never parsed as HTML.
"use strict";
(function () {
  const API = "/apis/tend.dev/v1";
  const KINDS = [["Network", "networks"], ["State", "states"], ["Sandbox", "sandboxes"], ["Container", "containers"]];
  const EVENTS = 50; // newest events shown
  const HISTORY = 60; // usage samples per container, as many as the daemon keeps
  const SVG = "http://www.w3.org/2000/svg";

  const frag = new URLSearchParams(location.hash.slice(1));
  const refreshMs = Math.max(1, Number(frag.get("refresh")) || 5) * 1000;
  let token = frag.get("token") || sessionStorage.getItem("tend-token") || "";
  if (frag.has("token")) {
    // Keep it in this tab only, and out of the address bar and the history.
    sessionStorage.setItem("tend-token", token);
    frag.delete("token");
    const rest = frag.toString();
    history.replaceState(null, "", location.pathname + location.search + (rest ? "#" + rest : ""));
  }
  const usage = new Map(); // Container uid -> [{t, cpu, mem}]
  let timer = null;

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    for (const c of children) {
      if (c === null || c === undefined) continue;
      e.appendChild(typeof c === "string" || typeof c === "number" ? document.createTextNode(String(c)) : c);
    }
    return e;
  }

  function $(id) { return document.getElementById(id); }

  function setError(text) {
    $("error").textContent = text;
    document.body.dataset.state = text ? "error" : document.body.dataset.state;
  }

  async function get(path) {
    const r = await fetch(path, { headers: { Authorization: "Bearer " + token, Accept: "application/json" }, cache: "no-store" });
    if (!r.ok) {
      let msg = r.status + " " + r.statusText;
      try { msg = r.status + ": " + (await r.json()).message; } catch (_) { /* not a Status */ }
      const e = new Error(path + ": " + msg);
      e.status = r.status;
      throw e;
    }
    return r.json();
  }

  function key(o) { return (o.metadata.namespace || "default") + "/" + o.metadata.name; }

  function readyOf(o) {
    const c = ((o.status || {}).conditions || []).find((c) => c.type === "Ready");
    return c ? c.status : "Unknown";
  }

  function conditions(o) {
    const ul = el("ul", { class: "conds" });
    for (const c of (o.status || {}).conditions || []) {
      ul.appendChild(el("li", { class: "cond", "data-type": c.type, "data-status": c.status },
        el("b", {}, c.type + "=" + c.status),
        c.reason ? " " + c.reason : null,
        c.message ? el("span", { class: "msg" }, ": " + c.message) : null));
    }
    return ul;
  }

  function details(o, kind) {
    const lines = [];
    for (const [k, v] of Object.entries(o.metadata.annotations || {})) {
      if (k === "kubectl.kubernetes.io/last-applied-configuration") continue;
      lines.push(k + ": " + String(v).slice(0, 300));
    }
    if (kind === "Container" && Array.isArray((o.spec || {}).command)) lines.push("command: " + o.spec.command.join(" "));
    return lines.length ? el("div", { class: "details" }, ...lines.map((l) => el("div", { class: "line" }, l))) : null;
  }

  // The daemon's kept samples of a Container, or this tab's own record of status.usage when the
  // daemon keeps none for it.
  function record(o, kept) {
    const uid = o.metadata.uid;
    if (kept && kept.length) {
      usage.set(uid, kept.map((u) => ({ t: u.sampledAt, cpu: u.cpuCores || 0, mem: u.workingSetBytes || 0 })));
      return;
    }
    const u = (o.status || {}).usage;
    if (!u || !uid) return;
    const h = usage.get(uid) || [];
    if (!h.length || h[h.length - 1].t !== u.sampledAt) {
      h.push({ t: u.sampledAt, cpu: u.cpuCores || 0, mem: u.workingSetBytes || 0 });
      if (h.length > HISTORY) h.shift();
    }
    usage.set(uid, h);
  }

  function spark(metric, values, label) {
    const W = 120, H = 22;
    const max = Math.max(...values), min = Math.min(...values);
    // Scaled between the series' own extremes; a flat series is a line across the middle.
    const y = (v) => max === min ? H / 2 : H - 1 - ((v - min) / (max - min)) * (H - 2);
    const pts = (values.length === 1 ? [values[0], values[0]] : values).map((v, i, a) =>
      (i * W / (a.length - 1)).toFixed(1) + "," + y(v).toFixed(1));
    const svg = document.createElementNS(SVG, "svg");
    for (const [k, v] of [["class", "spark"], ["data-metric", metric], ["data-samples", values.length], ["width", W], ["height", H], ["viewBox", "0 0 " + W + " " + H]]) svg.setAttribute(k, String(v));
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", pts.join(" "));
    svg.appendChild(line);
    return el("span", { class: "metric" }, svg, " " + label);
  }

  function usageCell(o) {
    const h = usage.get(o.metadata.uid);
    if (!h || !h.length) return el("td", {}, "");
    const last = h[h.length - 1];
    return el("td", { class: "usage" },
      spark("cpu", h.map((s) => s.cpu), Math.round(last.cpu * 1000) + "m"),
      spark("memory", h.map((s) => s.mem), (last.mem / 1048576).toFixed(1) + "Mi"));
  }

  function renderObjects(byKind) {
    const body = $("objects").tBodies[0];
    body.replaceChildren();
    for (const [kind] of KINDS) {
      for (const o of byKind[kind]) {
        body.appendChild(el("tr", { class: "object", "data-key": kind + "/" + key(o), "data-ready": readyOf(o) },
          el("td", {}, kind),
          el("td", {}, key(o), details(o, kind)),
          el("td", { class: "phase" }, (o.status || {}).phase || ""),
          el("td", {}, conditions(o)),
          kind === "Container" ? usageCell(o) : el("td", {}, "")));
      }
    }
  }

  function renderDeps(containers) {
    const byKey = new Map(containers.map((c) => [key(c), c]));
    const deps = (c) => ((c.spec || {}).dependsOn || []).map((d) => ({
      to: (c.metadata.namespace || "default") + "/" + d.container,
      name: d.container,
      condition: d.condition || "Ready",
    }));
    const needed = new Set();
    for (const c of containers) for (const d of deps(c)) needed.add(d.to);
    const node = (k, path) => {
      const c = byKey.get(k);
      const li = el("li", { class: "node", "data-key": k },
        el("span", { class: "name" }, k),
        " ", el("span", { class: "ready", "data-ready": c ? readyOf(c) : "Missing" }, c ? "Ready=" + readyOf(c) : "(not found)"));
      if (!c || path.has(k)) return li;
      const next = new Set(path).add(k);
      const ul = el("ul");
      for (const d of deps(c)) {
        const child = node(d.to, next);
        child.classList.add("dep");
        child.setAttribute("data-from", k);
        child.setAttribute("data-to", d.to);
        child.insertBefore(el("span", { class: "edge" }, "needs " + d.condition + " of "), child.firstChild);
        ul.appendChild(child);
      }
      if (ul.childNodes.length) li.appendChild(ul);
      return li;
    };
    const roots = containers.filter((c) => deps(c).length && !needed.has(key(c)));
    const tree = $("deps");
    tree.replaceChildren(...roots.map((c) => node(key(c), new Set())));
    if (!roots.length) tree.appendChild(el("li", { class: "none" }, "No Container lists spec.dependsOn."));
  }

  function ago(t) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(t)) / 1000));
    return s < 120 ? s + "s" : s < 7200 ? Math.round(s / 60) + "m" : Math.round(s / 3600) + "h";
  }

  function renderEvents(events) {
    const body = $("events").tBodies[0];
    body.replaceChildren(...events.slice().reverse().map((e) =>
      el("tr", { class: "event", "data-event-id": e.id, "data-type": e.type },
        el("td", { title: e.lastTimestamp }, ago(e.lastTimestamp)),
        el("td", {}, e.type),
        el("td", { class: "reason" }, e.reason),
        el("td", {}, e.kind + " " + e.namespace + "/" + e.name),
        el("td", {}, e.count),
        el("td", { class: "msg" }, e.message))));
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const [lists, events, history] = await Promise.all([
        Promise.all(KINDS.map(([, plural]) => get(API + "/" + plural))),
        get(API + "/events?limit=" + EVENTS),
        get(API + "/usage"),
      ]);
      const kept = new Map((history.items || []).map((h) => [h.uid, h.samples]));
      const byKind = {};
      KINDS.forEach(([kind], i) => { byKind[kind] = lists[i].items || []; });
      const live = new Set(byKind.Container.map((c) => c.metadata.uid));
      for (const uid of usage.keys()) if (!live.has(uid)) usage.delete(uid);
      byKind.Container.forEach((c) => record(c, kept.get(c.metadata.uid)));
      renderObjects(byKind);
      renderDeps(byKind.Container);
      renderEvents(events.items || []);
      $("refreshed").textContent = "updated " + new Date().toLocaleTimeString();
      setError("");
      $("login").hidden = true;
      $("main").hidden = false;
      document.body.dataset.state = "loaded";
    } catch (e) {
      setError(String(e.message || e));
      if (e.status === 401) {
        $("login").hidden = false;
        return; // no retry with a token the server refused
      }
    }
    timer = setTimeout(refresh, refreshMs);
  }

  function start() {
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      token = $("token").value.trim();
      $("token").value = "";
      sessionStorage.setItem("tend-token", token);
      refresh();
    });
    if (!token) {
      $("login").hidden = false;
      document.body.dataset.state = "login";
      return;
    }
    refresh();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
