// The overview (status, node, uptime, listeners, connected charge points, messages per second in and
// out drawn live from two reads of the Prometheus counters, the Enable switch) and the Settings form.

import { call, counterSums, get } from "./api.js";
import {
  buildForm, confirmAction, formatDuration, formatTime, h, isViewer, showError, svg, table, tag, toast,
} from "./ui.js";

const POLL_MS = 2000;
const SAMPLES = 60;
const IN = "ocppgw_frames_received_total"; // OCPP-J frames from charge points
const OUT = "ocppgw_mqtt_received_total"; // messages from the broker, for charge points

function stat(label, id, small = false) {
  return h("div", { class: "card stat" }, h("div", { class: "label" }, label),
    h("div", { class: small ? "value small" : "value", id }, "…"));
}

function enableSwitch(onchange) {
  const box = h("input", { type: "checkbox", id: "gateway-enable", onchange, disabled: isViewer() });
  return h("label", { class: "switch", title: "Enable or disable the gateway" },
    box, h("span", { class: "track" }), h("span", {}, "Enabled"));
}

function drawChart(chart, samples) {
  const width = Math.max(chart.clientWidth, 300);
  const height = 180;
  const left = 44;
  const bottom = 20;
  const top = 10;
  const plotH = height - top - bottom;
  const max = Math.max(1, ...samples.flatMap((s) => [s.in, s.out]));
  const nice = max <= 5 ? Math.ceil(max) : Math.ceil(max / 5) * 5;
  const x = (i) => left + ((width - left - 8) * i) / (SAMPLES - 1);
  const y = (v) => top + plotH - (plotH * v) / nice;
  const parts = [];
  for (const fraction of [0, 0.5, 1]) {
    const value = nice * fraction;
    parts.push(svg("line", { class: "grid", x1: left, x2: width - 8, y1: y(value), y2: y(value) }));
    const label = svg("text", { class: "axis", x: left - 6, y: y(value) + 4, "text-anchor": "end" });
    label.textContent = Number.isInteger(value) ? String(value) : value.toFixed(1);
    parts.push(label);
  }
  const caption = svg("text", { class: "axis", x: width - 8, y: height - 4, "text-anchor": "end" });
  caption.textContent = `last ${(SAMPLES * POLL_MS) / 1000} s`;
  parts.push(caption);
  const offset = SAMPLES - samples.length;
  for (const kind of ["in", "out"]) {
    if (samples.length > 0) {
      const points = samples.map((s, i) => `${x(offset + i).toFixed(1)},${y(s[kind]).toFixed(1)}`).join(" ");
      parts.push(svg("polyline", { class: `line ${kind}`, points }));
    }
  }
  chart.setAttribute("viewBox", `0 0 ${width} ${height}`);
  chart.replaceChildren(...parts);
}

export async function overview(container) {
  const chart = svg("svg", { class: "chart", id: "rate-chart", role: "img", "aria-label": "messages per second" });
  const listenersBox = h("div", { id: "overview-listeners" });
  const statusTag = h("span", { id: "gateway-status" });
  let gateway = null;
  let previous = null;
  const samples = [];
  let timer = null;
  let busy = false;

  async function toggle(event) {
    const enable = event.target.checked;
    if (!enable) {
      const count = gateway ? gateway.current_connections : 0;
      const sure = await confirmAction(
        `Disable the gateway? Every listener stops and ${count} connected charge point(s) are closed (1001).`,
        "Disable");
      if (!sure) {
        event.target.checked = true;
        return;
      }
    }
    event.target.disabled = true;
    try {
      await call("PUT", `/gateways/ocpp/enable/${enable}`);
      toast(enable ? "Gateway enabled: listening again" : "Gateway disabled");
    } catch (error) {
      showError(error);
    } finally {
      event.target.disabled = isViewer();
      await refresh();
    }
  }

  container.append(
    h("div", { class: "view-head" }, h("h1", {}, "Overview"), statusTag, h("span", { class: "spacer" }),
      enableSwitch(toggle)),
    h("div", { class: "stats" },
      stat("Node", "stat-node", true), stat("Uptime", "stat-uptime", true),
      stat("Connected charge points", "stat-connections"), stat("Listeners running", "stat-listeners"),
      stat("Messages in / s", "stat-in"), stat("Messages out / s", "stat-out")),
    h("div", { class: "card chart-card" },
      h("h2", {}, "Messages per second", h("span", { class: "legend in" }, "in (from charge points)"),
        h("span", { class: "legend out" }, "out (from MQTT to charge points)")),
      chart),
    h("div", { class: "card" }, h("h2", {}, "Listeners"), listenersBox));

  const set = (id, text) => {
    const element = document.getElementById(id);
    if (element) element.textContent = text;
  };

  function showGateway(listeners) {
    const running = gateway.status === "running";
    statusTag.replaceChildren(tag(running ? "Running" : "Stopped", running ? "ok" : "off"));
    document.getElementById("gateway-enable").checked = running;
    const node = gateway.node_status && gateway.node_status[0] ? gateway.node_status[0].node : "—";
    set("stat-node", node);
    const since = running ? gateway.started_at : gateway.stopped_at;
    const seconds = since ? (Date.now() - new Date(since).getTime()) / 1000 : 0;
    set("stat-uptime", running ? formatDuration(seconds) : `stopped ${formatTime(since)}`);
    set("stat-connections", String(gateway.current_connections));
    set("stat-listeners", `${gateway.listeners.filter((l) => l.running).length} / ${gateway.listeners.length}`);
    listenersBox.replaceChildren(table([
      { title: "ID", cell: (l) => l.id },
      { title: "Address", cell: (l) => l.bind },
      { title: "Path", cell: (l) => l.websocket.path },
      { title: "Connections", cell: (l) => `${l.status.current_connections} / ${l.status.max_connections}` },
      { title: "State", cell: (l) => tag(l.running ? "Running" : "Stopped", l.running ? "ok" : "off") },
    ], listeners, "No listener"));
  }

  function showRates(text) {
    const sums = counterSums(text, [IN, OUT]);
    const now = performance.now();
    if (previous) {
      const seconds = Math.max((now - previous.at) / 1000, 0.001);
      const rate = (key) => Math.max(0, (sums[key] - previous.sums[key]) / seconds);
      samples.push({ in: rate(IN), out: rate(OUT) });
      if (samples.length > SAMPLES) samples.shift();
      const last = samples[samples.length - 1];
      set("stat-in", last.in.toFixed(1));
      set("stat-out", last.out.toFixed(1));
    }
    previous = { at: now, sums };
    drawChart(chart, samples);
  }

  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const [gateways, listeners, metrics] = await Promise.all([
        get("/gateways"), get("/gateways/ocpp/listeners"), get("/prometheus/stats"),
      ]);
      gateway = gateways.find((g) => g.name === "ocpp");
      if (!container.isConnected || !gateway) return;
      showGateway(listeners);
      showRates(metrics);
    } catch (error) {
      showError(error);
      if (error.status === 401) stop();
    } finally {
      busy = false;
    }
  }

  function stop() {
    clearInterval(timer);
    timer = null;
  }

  await refresh();
  timer = setInterval(refresh, POLL_MS);
  return stop;
}

const GENERAL = [
  { key: "mountpoint", label: "Mountpoint", emptyNull: false, help: "Prefix of every topic; ${cid} allowed, e.g. ocpp/" },
  { key: "default_heartbeat_interval", label: "Default heartbeat interval", placeholder: "60s" },
  { key: "heartbeat_checking_times_backoff", label: "Heartbeat checking times backoff", type: "number" },
  { key: "idle_timeout", label: "Idle timeout", placeholder: "30s", help: "applies after a restart" },
  { key: "message_format_checking", label: "Message format checking", type: "select",
    options: ["all", "upstream_only", "dnstream_only", "disable"], help: "applies after a restart" },
  { key: "json_schema_dir", label: "JSON schema directory", help: "applies after a restart" },
  { key: "json_schema_id_prefix", label: "JSON schema id prefix", help: "applies after a restart" },
];
const QOS = { type: "select", options: ["0", "1", "2"], numeric: true };
const UPSTREAM = [
  { key: "upstream.topic", label: "Topic", help: "Calls from charge points, e.g. cp/${cid}" },
  { key: "upstream.reply_topic", label: "Reply topic" },
  { key: "upstream.error_topic", label: "Error topic" },
  { key: "upstream.qos", label: "QoS", ...QOS },
  { key: "upstream.topic_override_mapping", label: "Topic override mapping", type: "mapping", wide: true,
    placeholder: "Action = topic, one a line (BootNotification = cp/${cid}/boot)" },
];
const DNSTREAM = [
  { key: "dnstream.topic", label: "Topic", help: "Calls and replies for charge points, e.g. cs/${cid}" },
  { key: "dnstream.max_mqueue_len", label: "Max queue length", type: "number" },
  { key: "dnstream.reply_timeout", label: "Reply timeout", placeholder: "30s" },
  { key: "dnstream.qos", label: "QoS", ...QOS },
];
const BODY_KEYS = [...GENERAL.map((f) => f.key), "upstream", "dnstream"];

export async function settings(container) {
  const config = await get("/gateways/ocpp");
  const form = buildForm([...GENERAL, ...UPSTREAM, ...DNSTREAM], config);
  const fieldsets = [["General", GENERAL], ["Upstream (charge point → MQTT)", UPSTREAM],
    ["Downstream (MQTT → charge point)", DNSTREAM]].map(([legend, fields]) => h("fieldset", {},
    h("legend", {}, legend), h("div", { class: "form-grid" },
      fields.map((field) => form.labels.get(field)))));
  const save = h("button", { class: "primary write", type: "submit" }, "Save");
  const element = h("form", { class: "card", id: "settings-form" }, fieldsets,
    h("div", { class: "form-actions" }, save));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = form.read();
    const body = Object.fromEntries(BODY_KEYS.map((key) => [key, values[key]]));
    save.disabled = true;
    try {
      const { headers } = await call("PUT", "/gateways/ocpp", { json: body });
      const restart = headers.get("X-Restart-Required");
      toast(restart ? `Saved. After a restart: ${restart}` : "Saved: applies to the next charge point that connects");
    } catch (error) {
      showError(error);
    } finally {
      save.disabled = false;
    }
  });
  container.append(h("div", { class: "view-head" }, h("h1", {}, "Settings")), element);
}
