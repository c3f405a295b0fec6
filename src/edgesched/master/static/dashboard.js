// edgesched dashboard: plain JavaScript, no framework, nothing loaded from elsewhere.
//
// It reads GET api/v1/events (server-sent events: a JSON snapshot of the cluster a second)
// through fetch(), so that the API token can travel as an Authorization header when the
// master asks for it on reads too (master.auth_read). Histories for the charts and the
// sparklines are kept here, from the snapshots. Every text that comes from the cluster is
// put in the page as text (textContent), never as markup.
(() => {
  "use strict";

  const $ = (id) => document.getElementById(id);
  // the namespace of the page's own <svg> elements (the HTML parser put them there)
  const SVG_NS = $("chart-throughput").namespaceURI;
  const TOKEN_KEY = "edgesched.apiToken";
  const HISTORY_MS = 5 * 60 * 1000; // cluster charts: the last five minutes
  const SPARK_POINTS = 60; // device sparklines: the last 60 snapshots
  const DETAIL_REFRESH_MS = 2000; // an unfinished task's detail is fetched again this often
  const FINAL = new Set(["done", "dead", "cancelled"]);
  const STAGES = [
    ["queued", "queued → assigned", "queue_wait_ms", "in the master's queue until a device is free"],
    ["transferred", "assigned → transferred", "transfer_ms", "the picture travels to the board"],
    ["board", "on the board", null, "waiting for a slot, decoding, post-processing, pacing"],
    ["inference", "inference", "inference_ms", "the model runs on the board"],
    ["returned", "result returned", "result_return_ms", "the result travels back to the master"],
    ["delivered", "delivered", "delivery_ms", "pushed to a seed client's receiver (gRPC clients stream it)"],
  ];
  const BOARD = [
    ["receive_ms", "receive"],
    ["queue_ms", "queue"],
    ["decode_ms", "decode"],
    ["inference_ms", "inference"],
    ["postprocess_ms", "post-process"],
    ["paced_ms", "paced (emulation)"],
    ["total_ms", "total"],
  ];

  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  let retryMs = 2000;
  let feed = null; // the AbortController of the stream in use
  let reconnectTimer = 0;
  let selected = ""; // the task shown in the detail panel
  let selectedFinal = true;
  let detailFetchedAt = 0;
  let recentKey = "";
  let failuresKey = "";
  let lastTime = 0;
  const history = { t: [], throughput: [], p50: [], p95: [], queue: [] };
  const sparks = new Map(); // device id -> {cpu: [], memory: [], xpu: [], bandwidth: []}

  // ---- small helpers -------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null) continue;
      if (key === "class") node.className = value;
      else node.setAttribute(key, String(value));
    }
    for (const child of children) {
      if (child === undefined || child === null) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, String(value));
    return node;
  }

  function svgText(x, y, text, anchor, cls) {
    const node = svg("text", { x, y, "text-anchor": anchor || "start" });
    if (cls) node.setAttribute("class", cls);
    node.textContent = text;
    return node;
  }

  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const fmt = {
    num: (v, digits) => (isNum(v) ? v.toFixed(digits) : "–"),
    pct: (v) => (isNum(v) ? `${(v * 100).toFixed(0)} %` : "–"),
    ms: (v) => {
      if (!isNum(v)) return "–";
      if (v >= 10000) return `${(v / 1000).toFixed(1)} s`;
      if (v >= 100) return `${v.toFixed(0)} ms`;
      return `${v.toFixed(1)} ms`;
    },
    mbps: (v) => (isNum(v) ? `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} Mbit/s` : "–"),
    time: (ms) => (ms ? new Date(ms).toLocaleTimeString() : "–"),
    short: (id) => (id.length > 10 ? `${id.slice(0, 8)}…` : id),
  };

  function showMessage(text, isError) {
    const box = $("message");
    box.textContent = text;
    box.className = isError ? "error" : "ok";
    box.dataset.kind = isError ? "error" : "ok";
    box.hidden = false;
  }

  function authHeaders(extra) {
    const headers = Object.assign({}, extra || {});
    if (token) headers.Authorization = `Bearer ${token}`;
    return headers;
  }

  async function errorOf(response) {
    try {
      const body = await response.json();
      if (body && typeof body.msg === "string") return body.msg;
      if (body && body.detail) return JSON.stringify(body.detail);
    } catch (err) {
      // not JSON: the status text says enough
    }
    return response.statusText || "request failed";
  }

  function hint(status) {
    if (status === 401) return " — enter the API token above (edgesched token show --api)";
    return "";
  }

  // ---- the API token ---------------------------------------------------------------------

  function showTokenState() {
    $("token-state").textContent = token ? "token set for this tab" : "no token";
    $("token-state").dataset.set = token ? "true" : "false";
  }

  function useToken(value) {
    token = value;
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("api-token").value = "";
    showTokenState();
    reconnect(); // reads may need it too
  }

  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("api-token").value.trim();
    useToken(value);
    showMessage(value ? "API token set for this tab" : "API token cleared", false);
  });
  $("token-forget").addEventListener("click", () => {
    useToken("");
    showMessage("API token forgotten", false);
  });

  // ---- the live feed -----------------------------------------------------------------------

  function setLive(state, text) {
    const badge = $("live-status");
    badge.dataset.state = state;
    badge.textContent = text;
  }

  function reconnect() {
    if (feed) feed.abort();
    clearTimeout(reconnectTimer);
    connect();
  }

  async function connect() {
    const controller = new AbortController();
    feed = controller;
    setLive("connecting", "connecting…");
    let refused = "";
    try {
      const response = await fetch("api/v1/events", {
        headers: authHeaders({ Accept: "text/event-stream" }),
        cache: "no-store",
        signal: controller.signal,
      });
      if (!response.ok) {
        refused = `live feed: ${response.status} ${await errorOf(response)}${hint(response.status)}`;
      } else {
        setLive("live", "live");
        await readEvents(response.body);
      }
    } catch (err) {
      if (controller.signal.aborted) return; // replaced by a newer stream
    }
    if (controller !== feed) return;
    if (refused) {
      setLive("error", "refused");
      showMessage(refused, true);
    } else {
      setLive("reconnecting", "reconnecting…");
    }
    reconnectTimer = setTimeout(connect, refused ? Math.max(retryMs, 5000) : retryMs);
  }

  async function readEvents(body) {
    const reader = body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true });
      let match;
      while ((match = /\r?\n\r?\n/.exec(buffer)) !== null) {
        const block = buffer.slice(0, match.index);
        buffer = buffer.slice(match.index + match[0].length);
        handleEvent(block);
      }
    }
  }

  function handleEvent(block) {
    let name = "message";
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue; // a comment (keep-alive)
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "event") name = value;
      else if (field === "data") data.push(value);
      else if (field === "retry" && /^\d+$/.test(value)) retryMs = Number(value);
    }
    if (!data.length || (name !== "snapshot" && name !== "message")) return;
    let snapshot;
    try {
      snapshot = JSON.parse(data.join("\n"));
    } catch (err) {
      return;
    }
    render(snapshot);
  }

  // ---- charts ------------------------------------------------------------------------------

  function niceMax(value) {
    if (!(value > 0)) return 1;
    const step = Math.pow(10, Math.floor(Math.log10(value)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * step >= value) return m * step;
    return 10 * step;
  }

  function lineChart(node, times, series, digits) {
    node.replaceChildren();
    const W = 480, H = 150, L = 44, R = 8, T = 10, B = 18;
    const now = times.length ? times[times.length - 1] : Date.now();
    // from the first snapshot kept (at least a minute back) to now
    const span = Math.min(HISTORY_MS, Math.max(60 * 1000, times.length ? now - times[0] : 0));
    const t0 = now - span;
    let top = 0;
    for (const values of series) for (const v of values) if (isNum(v)) top = Math.max(top, v);
    top = niceMax(top);
    const y = (v) => T + (1 - v / top) * (H - T - B);
    const x = (t) => L + ((t - t0) / span) * (W - L - R);
    for (const v of [0, top / 2, top]) {
      node.append(svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "grid" }));
      node.append(svgText(L - 4, y(v) + 3, fmt.num(v, top >= 10 ? 0 : digits), "end"));
    }
    const back = span >= 120 * 1000 ? `${Math.round(span / 60000)} min` : `${Math.round(span / 1000)} s`;
    node.append(svgText(L, H - 4, `−${back}`));
    node.append(svgText(W - R, H - 4, "now", "end"));
    series.forEach((values, i) => {
      let points = [];
      const flush = () => {
        if (points.length) {
          node.append(svg("polyline", { points: points.join(" "), class: `series s${i}` }));
        }
        points = [];
      };
      values.forEach((v, k) => {
        if (!isNum(v) || times[k] < t0) return flush();
        points.push(`${x(times[k]).toFixed(1)},${y(v).toFixed(1)}`);
      });
      flush();
    });
  }

  function barChart(node, labels, counts) {
    node.replaceChildren();
    const W = 480, H = 150, L = 110, R = 40, T = 6, B = 6;
    if (!labels.length) {
      node.append(svgText(W / 2, H / 2, "no devices", "middle"));
      return;
    }
    const top = niceMax(Math.max(1, ...counts));
    const lane = (H - T - B) / labels.length;
    const height = Math.max(2, Math.min(22, lane - 4));
    labels.forEach((label, i) => {
      const yMid = T + lane * i + lane / 2;
      const width = ((W - L - R) * counts[i]) / top;
      node.append(svgText(L - 6, yMid + 3, label.length > 16 ? `${label.slice(0, 15)}…` : label, "end"));
      const bar = svg("rect", { x: L, y: yMid - height / 2, width: Math.max(0, width), height, class: "bar" });
      bar.setAttribute("data-bar-device", label);
      node.append(bar);
      node.append(svgText(L + width + 4, yMid + 3, String(counts[i]), "start", "bar-label"));
    });
  }

  function sparkline(node, values, fixedTop) {
    node.replaceChildren(svg("rect", { x: 0, y: 0, width: 80, height: 22, class: "spark-bg" }));
    const W = 80, H = 22;
    const numbers = values.filter(isNum);
    if (!numbers.length) return;
    const top = fixedTop || niceMax(Math.max(...numbers));
    const step = W / (SPARK_POINTS - 1);
    const offset = SPARK_POINTS - values.length;
    const points = [];
    values.forEach((v, i) => {
      if (!isNum(v)) return;
      const yv = H - 1 - (Math.min(v, top) / top) * (H - 2);
      points.push(`${((offset + i) * step).toFixed(1)},${yv.toFixed(1)}`);
    });
    node.append(svg("polyline", { points: points.join(" ") }));
  }

  // ---- rendering a snapshot ------------------------------------------------------------------

  function setFigure(id, text, value) {
    const node = $(id);
    node.textContent = text;
    node.dataset.value = String(value === null || value === undefined ? "" : value);
  }

  function render(s) {
    const fresh = s.time_unix_ms !== lastTime; // streams may share a snapshot
    lastTime = s.time_unix_ms;
    const w = s.window;
    $("clock").textContent = `as of ${fmt.time(s.time_unix_ms)}`;
    setFigure("throughput", fmt.num(w.throughput_per_s, 2), w.throughput_per_s);
    setFigure("latency-p50", fmt.num(w.latency_p50_ms, 0), w.latency_p50_ms);
    setFigure("latency-p95", fmt.num(w.latency_p95_ms, 0), w.latency_p95_ms);
    setFigure("queue-depth", String(s.queue_depth), s.queue_depth);
    setFigure("device-count", String(s.devices.length), s.devices.length);
    $("device-states").textContent = Object.entries(s.device_states)
      .map(([state, n]) => `${n} ${state}`)
      .join(", ");
    const total = Object.values(s.tasks).reduce((a, b) => a + b, 0);
    setFigure("task-count", String(total), total);
    $("task-states").textContent = Object.entries(s.tasks)
      .map(([state, n]) => `${n} ${state}`)
      .join(", ");
    const h = s.hedges;
    setFigure("hedge-count", String(h.started), h.started);
    $("hedge-detail").textContent =
      `${h.won} won, ${h.lost} lost, ${fmt.num(h.wasted_s, 1)} s wasted`;
    const span = String(Math.max(1, Math.round(w.seconds)));
    $("window-seconds").textContent = span;
    $("window-seconds-2").textContent = span;

    if (fresh) {
      history.t.push(s.time_unix_ms);
      history.throughput.push(w.throughput_per_s);
      history.p50.push(w.latency_p50_ms);
      history.p95.push(w.latency_p95_ms);
      history.queue.push(s.queue_depth);
      while (history.t.length && history.t[0] < s.time_unix_ms - HISTORY_MS) {
        for (const key of Object.keys(history)) history[key].shift();
      }
    }
    lineChart($("chart-throughput"), history.t, [history.throughput], 2);
    lineChart($("chart-latency"), history.t, [history.p50, history.p95], 1);
    lineChart($("chart-queue"), history.t, [history.queue], 1);
    const ids = s.devices.map((d) => d.id);
    for (const id of Object.keys(w.per_device)) if (!ids.includes(id)) ids.push(id);
    barChart($("chart-per-device"), ids, ids.map((id) => w.per_device[id] || 0));

    renderDevices(s.devices, fresh);
    renderRecent(s.recent);
    renderFailures(s.failures);
    if (selected && !selectedFinal && Date.now() - detailFetchedAt > DETAIL_REFRESH_MS) loadDetail();
  }

  // ---- devices -----------------------------------------------------------------------------

  const METRICS = [
    ["cpu", (d) => d.cpu, fmt.pct, 1],
    ["memory", (d) => d.memory, fmt.pct, 1],
    ["xpu", (d) => d.xpu, fmt.pct, 1],
    ["bandwidth", (d) => d.bandwidth_mbps, fmt.mbps, 0],
  ];

  function deviceRow(id) {
    const row = el("tr", { "data-device-id": id });
    row.append(el("td", { "data-field": "id" }, el("code", {}, id)));
    row.append(el("td", { "data-field": "type" }));
    row.append(el("td", { "data-field": "state" }));
    for (const [name] of METRICS) {
      const cell = el("td", { "data-field": name });
      const box = el("div", { class: "metric" }, el("span", { class: "v" }));
      const spark = svg("svg", { class: "spark", viewBox: "0 0 80 22", "aria-hidden": "true" });
      box.append(spark);
      cell.append(box);
      row.append(cell);
    }
    row.append(el("td", { "data-field": "slots", class: "num" }));
    row.append(el("td", { "data-field": "tasks-done", class: "num" }));
    row.append(el("td", { "data-field": "mean-service", class: "num" }));
    const drain = el("button", { type: "button", "data-action": "drain", "data-testid": "drain" }, "Drain");
    const undrain = el("button", { type: "button", "data-action": "undrain", "data-testid": "undrain" }, "Undrain");
    row.append(el("td", { "data-field": "actions" }, drain, undrain));
    return row;
  }

  function field(row, name) {
    return row.querySelector(`[data-field="${name}"]`);
  }

  function updateDevice(row, d, fresh) {
    row.dataset.state = d.state;
    row.dataset.draining = String(Boolean(d.draining));
    row.dataset.emulated = String(Boolean(d.emulated));
    const type = field(row, "type");
    type.replaceChildren(d.type, " ");
    if (d.emulated) type.append(el("span", { class: "badge emulated", title: "emulated board: paced to its published speed" }, "emulated"));
    const state = field(row, "state");
    state.replaceChildren(el("span", { class: `badge state-${d.state}`, "data-testid": "device-state" }, d.state));
    if (d.draining && d.state !== "draining") state.append(el("span", { class: "badge state-draining" }, "draining"));
    state.title = `last heard ${fmt.num(d.heartbeat_age_s, 1)} s ago; ${d.hostname || "no hostname"}`;
    let kept = sparks.get(d.id);
    if (!kept) {
      kept = { cpu: [], memory: [], xpu: [], bandwidth: [] };
      sparks.set(d.id, kept);
    }
    for (const [name, get, format, top] of METRICS) {
      const value = get(d);
      if (fresh) {
        kept[name].push(isNum(value) ? value : null);
        if (kept[name].length > SPARK_POINTS) kept[name].shift();
      }
      const cell = field(row, name);
      cell.querySelector(".v").textContent = format(value);
      cell.dataset.value = isNum(value) ? String(value) : "";
      sparkline(cell.querySelector("svg"), kept[name], top);
    }
    const used = d.slots - d.free_slots;
    const slots = field(row, "slots");
    slots.textContent = `${used} / ${d.slots}`;
    slots.title = d.running > d.slots ? `${d.running - d.slots} more queued on the board` : "";
    field(row, "tasks-done").textContent = String(d.tasks_done);
    field(row, "mean-service").textContent = d.tasks_done ? fmt.ms(d.mean_service_ms) : "–";
    row.querySelector('[data-action="drain"]').hidden = Boolean(d.draining);
    row.querySelector('[data-action="undrain"]').hidden = !d.draining;
  }

  function renderDevices(devices, fresh) {
    const body = $("device-rows");
    const seen = new Set();
    for (const d of devices) {
      seen.add(d.id);
      let row = body.querySelector(`tr[data-device-id="${CSS.escape(d.id)}"]`);
      if (!row) row = deviceRow(d.id);
      updateDevice(row, d, fresh);
      body.append(row); // keeps the rows in the snapshot's order (by id)
    }
    for (const row of Array.from(body.children)) {
      if (!seen.has(row.dataset.deviceId)) {
        sparks.delete(row.dataset.deviceId);
        row.remove();
      }
    }
    $("no-devices").hidden = devices.length > 0;
  }

  $("device-rows").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const row = button.closest("tr[data-device-id]");
    deviceAction(row.dataset.deviceId, button.dataset.action);
  });

  async function deviceAction(id, action) {
    const label = `${action} ${id}`;
    try {
      const response = await fetch(`api/v1/devices/${encodeURIComponent(id)}/${action}`, {
        method: "POST",
        headers: authHeaders(),
      });
      if (!response.ok) {
        showMessage(`${label}: ${response.status} ${await errorOf(response)}${hint(response.status)}`, true);
        return;
      }
      const device = await response.json();
      showMessage(`${label}: the device is ${device.state}`, false);
      const row = $("device-rows").querySelector(`tr[data-device-id="${CSS.escape(id)}"]`);
      if (row) updateDevice(row, device, false);
    } catch (err) {
      showMessage(`${label}: ${err}`, true);
    }
  }

  // ---- tasks -------------------------------------------------------------------------------

  function stateBadge(state) {
    return el("span", { class: `badge state-${state}` }, state);
  }

  function reasonOf(t) {
    if (t.error) return t.error;
    const last = t.errors[t.errors.length - 1];
    return last ? `${last.kind}: ${last.message} (attempt ${last.attempt} on ${last.device_id})` : "";
  }

  function taskRow(t, cells) {
    const row = el("tr", { "data-task-id": t.id, "data-state": t.state, class: "clickable", tabindex: 0 });
    if (t.id === selected) row.classList.add("selected");
    for (const cell of cells) row.append(cell);
    return row;
  }

  function renderRecent(tasks) {
    const key = JSON.stringify(tasks.map((t) => [t.id, t.state, t.device_id, t.end_to_end_ms]));
    if (key === recentKey) return;
    recentKey = key;
    $("recent-rows").replaceChildren(
      ...tasks.map((t) =>
        taskRow(t, [
          el("td", { title: t.id }, el("code", {}, fmt.short(t.id))),
          el("td", {}, stateBadge(t.state)),
          el("td", { class: "reason" }, t.filename),
          el("td", { title: t.device_type }, t.device_id || "–"),
          el("td", { class: "num" }, fmt.ms(t.end_to_end_ms)),
          el("td", {}, fmt.time(t.submitted_unix_ms)),
        ]),
      ),
    );
  }

  function renderFailures(tasks) {
    const key = JSON.stringify(tasks.map((t) => [t.id, t.state, t.attempts, t.error, t.errors.length]));
    if (key === failuresKey) return;
    failuresKey = key;
    $("failure-rows").replaceChildren(
      ...tasks.map((t) => {
        const action = t.state === "dead"
          ? el("button", { type: "button", "data-action": "retry", "data-testid": "retry" }, "Retry")
          : "";
        return taskRow(t, [
          el("td", { title: t.id }, el("code", {}, fmt.short(t.id))),
          el("td", {}, stateBadge(t.state)),
          el("td", { class: "num" }, `${t.attempts} (${t.failures} failed)`),
          el("td", { class: "reason", "data-field": "reason" }, reasonOf(t)),
          el("td", {}, action),
        ]);
      }),
    );
    $("no-failures").hidden = tasks.length > 0;
  }

  function onTaskClick(event) {
    const button = event.target.closest("button[data-action=retry]");
    const row = event.target.closest("tr[data-task-id]");
    if (!row) return;
    if (button) retryTask(row.dataset.taskId);
    else showTask(row.dataset.taskId);
  }

  function onTaskKey(event) {
    if (event.key !== "Enter") return;
    const row = event.target.closest("tr[data-task-id]");
    if (row && !event.target.closest("button")) showTask(row.dataset.taskId);
  }

  for (const id of ["recent-rows", "failure-rows"]) {
    $(id).addEventListener("click", onTaskClick);
    $(id).addEventListener("keydown", onTaskKey);
  }

  async function retryTask(id) {
    const label = `retry ${fmt.short(id)}`;
    try {
      const response = await fetch(`api/v1/tasks/${encodeURIComponent(id)}/retry`, {
        method: "POST",
        headers: authHeaders(),
      });
      if (!response.ok) {
        showMessage(`${label}: ${response.status} ${await errorOf(response)}${hint(response.status)}`, true);
        return;
      }
      const body = await response.json();
      showMessage(`${label}: ${body.msg}`, false);
      if (selected === id) loadDetail();
    } catch (err) {
      showMessage(`${label}: ${err}`, true);
    }
  }

  function showTask(id) {
    selected = id;
    selectedFinal = false;
    for (const row of document.querySelectorAll("tr[data-task-id]")) {
      row.classList.toggle("selected", row.dataset.taskId === id);
    }
    $("task-detail").hidden = false;
    $("detail-id").textContent = id;
    loadDetail();
  }

  $("detail-close").addEventListener("click", () => {
    selected = "";
    $("task-detail").hidden = true;
    for (const row of document.querySelectorAll("tr.selected")) row.classList.remove("selected");
  });

  async function loadDetail() {
    const id = selected;
    if (!id) return;
    detailFetchedAt = Date.now();
    try {
      const response = await fetch(`api/v1/tasks/${encodeURIComponent(id)}`, {
        headers: authHeaders(),
        cache: "no-store",
      });
      if (id !== selected) return;
      if (!response.ok) {
        showMessage(`task ${fmt.short(id)}: ${response.status} ${await errorOf(response)}${hint(response.status)}`, true);
        return;
      }
      renderDetail(await response.json());
    } catch (err) {
      showMessage(`task ${fmt.short(id)}: ${err}`, true);
    }
  }

  function renderDetail(t) {
    selectedFinal = FINAL.has(t.state);
    const detail = $("task-detail");
    detail.dataset.taskId = t.id;
    detail.dataset.state = t.state;
    const facts = [
      ["state", stateBadge(t.state)],
      ["task type", t.task_type],
      ["file", t.filename],
      ["client", t.client_id],
      ["device", t.device_id ? `${t.device_id} (${t.device_type})` : "–"],
      ["attempts", `${t.attempts} (${t.failures} failed)`],
      ["submitted", fmt.time(t.submitted_unix_ms)],
      ["finished", fmt.time(t.finished_unix_ms)],
    ];
    if (t.result) facts.push(["detections", String(t.result.detections.length)]);
    if (t.delivery) facts.push(["delivery", t.delivery]);
    if (t.note) facts.push(["note", t.note]);
    if (t.error) facts.push(["error", t.error]);
    $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v)]));

    const timings = t.timings || {};
    const board = timings.board || {};
    const durations = STAGES.map(([key, , timing]) => {
      if (timing) return isNum(timings[timing]) ? timings[timing] : null;
      if (!isNum(board.total_ms)) return null;
      const rest = board.total_ms - (board.receive_ms || 0) - (board.inference_ms || 0);
      return Math.max(0, rest);
    });
    const endToEnd = isNum(timings.end_to_end_ms) ? timings.end_to_end_ms : null;
    const rows = STAGES.map(([key, label, , what], i) =>
      el("tr", { "data-stage": key },
        el("td", {}, el("span", { class: `swatch stage-${i % 5}` }), label),
        el("td", { class: "num", "data-field": "duration" }, durations[i] === null ? "–" : fmt.ms(durations[i])),
        el("td", { class: "muted" }, durations[i] === null && !selectedFinal ? "not reached yet" : what),
      ),
    );
    rows.push(
      el("tr", { "data-stage": "end_to_end" },
        el("td", {}, el("strong", {}, "end to end")),
        el("td", { class: "num", "data-field": "duration" }, fmt.ms(endToEnd)),
        el("td", { class: "muted" }, "submission to result"),
      ),
    );
    $("detail-stages").tBodies[0].replaceChildren(...rows);

    const chart = $("detail-stages-chart");
    chart.replaceChildren();
    const total = endToEnd || durations.reduce((a, b) => a + (b || 0), 0);
    if (total > 0) {
      let x = 0;
      durations.forEach((d, i) => {
        if (!d) return;
        const width = (480 * d) / total;
        const rect = svg("rect", { x: x.toFixed(1), y: 2, width: Math.max(0.5, width).toFixed(1), height: 16, class: `stage-${i % 5}` });
        const title = svg("title", {});
        title.textContent = `${STAGES[i][1]}: ${fmt.ms(d)}`;
        rect.append(title);
        chart.append(rect);
        x += width;
      });
    }

    const boardRows = BOARD.filter(([k]) => isNum(board[k])).map(([k, label]) =>
      el("tr", { "data-board": k }, el("td", {}, label), el("td", { class: "num" }, fmt.ms(board[k]))),
    );
    $("detail-board").tBodies[0].replaceChildren(...boardRows);
    $("detail-board-title").hidden = boardRows.length === 0;

    const errors = (t.errors || []).map((e) =>
      el("li", {},
        `attempt ${e.attempt} on ${e.device_id || "?"}: ${e.kind}: ${e.message}`,
        el("span", { class: "muted" }, ` (${fmt.time(e.at_unix_ms)}${e.counted ? "" : ", not counted"})`),
      ),
    );
    $("detail-errors").replaceChildren(...errors);
    $("detail-errors-title").hidden = errors.length === 0;
  }

  // ---- start ---------------------------------------------------------------------------------

  showTokenState();
  connect();
})();
