// Listeners: the table, and a drawer to add, change or delete one (ws or wss). A changed listener
// restarts alone; the others keep their charge points.

import { call, get } from "./api.js";
import { buildForm, closeDrawer, confirmAction, h, isViewer, openDrawer, showError, table, tag, toast } from "./ui.js";

const BASE = "/gateways/ocpp/listeners";

const MAIN = [
  { key: "name", label: "Name", required: true, help: "letters, digits, _ or -" },
  { key: "type", label: "Type", type: "select", options: ["ws", "wss"] },
  { key: "bind", label: "Bind", required: true, placeholder: "0.0.0.0:33033", help: "PORT, HOST:PORT or [IPv6]:PORT" },
  { key: "websocket.path", label: "Path", placeholder: "/ocpp" },
  { key: "max_connections", label: "Max connections", type: "count", placeholder: "infinity" },
  { key: "max_conn_rate", label: "Max connection rate", type: "count", placeholder: "infinity", help: "per second" },
  { key: "mountpoint", label: "Mountpoint", help: "empty: the gateway's" },
  { key: "proxy_protocol", label: "PROXY protocol", type: "checkbox" },
];
const TLS = [
  { key: "ssl_options.certfile", label: "Certificate file", placeholder: "/etc/ocppgw/server.pem" },
  { key: "ssl_options.keyfile", label: "Key file", placeholder: "/etc/ocppgw/server.key" },
  { key: "ssl_options.password", label: "Key password", type: "password" },
  { key: "ssl_options.cacertfile", label: "CA certificates file", help: "to verify client certificates" },
  { key: "ssl_options.verify", label: "Verify clients", type: "select", options: ["verify_none", "verify_peer"] },
  { key: "ssl_options.fail_if_no_peer_cert", label: "Require a client certificate", type: "checkbox" },
];

function editor(listener) {
  const isNew = listener === null;
  const values = isNew ? { type: "ws", name: "", bind: "", websocket: { path: "/ocpp" }, proxy_protocol: false } : listener;
  const form = buildForm([...MAIN, ...TLS], values);
  const input = (key) => form.inputs.get([...form.inputs.keys()].find((f) => f.key === key));
  const tlsBox = h("fieldset", {}, h("legend", {}, "TLS (wss)"), h("div", { class: "form-grid" }, TLS.map((f) => form.labels.get(f))));
  const typeSelect = input("type");
  const showTls = () => {
    tlsBox.hidden = typeSelect.value !== "wss";
  };
  typeSelect.addEventListener("change", showTls);
  if (!isNew) {
    input("name").readOnly = true;
    typeSelect.disabled = true;
  }
  showTls();
  const save = h("button", { type: "submit", class: "primary" }, isNew ? "Add" : "Save");
  const remove = isNew ? null : h("button", { type: "button", class: "danger", onclick: () => removeListener(listener) }, "Delete");
  const element = h("form", { id: "listener-form" },
    h("div", { class: "form-grid" }, MAIN.map((f) => form.labels.get(f))), tlsBox,
    h("div", { class: "form-actions" }, remove, h("span", { class: "spacer" }),
      h("button", { type: "button", class: "ghost", onclick: closeDrawer }, "Cancel"), save));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = form.read();
    for (const key of ["id", "running", "status", "node_status"]) delete body[key];
    if (body.type !== "wss") delete body.ssl_options;
    save.disabled = true;
    try {
      if (isNew) await call("POST", BASE, { json: body });
      else await call("PUT", `${BASE}/${encodeURIComponent(listener.id)}`, { json: body });
      toast(isNew ? `Listener ${body.name} added and listening` : `Listener ${body.name} changed and restarted`);
      closeDrawer();
      window.dispatchEvent(new Event("ocppgw:listeners-changed"));
    } catch (error) {
      showError(error);
    } finally {
      save.disabled = false;
    }
  });
  openDrawer(isNew ? "Add listener" : `Listener ${listener.id}`, element);
}

async function removeListener(listener) {
  const count = listener.status ? listener.status.current_connections : 0;
  if (!(await confirmAction(`Delete ${listener.id}? It stops listening and its ${count} charge point(s) are closed (1001).`, "Delete"))) {
    return;
  }
  try {
    await call("DELETE", `${BASE}/${encodeURIComponent(listener.id)}`);
    toast(`Listener ${listener.id} deleted`);
    closeDrawer();
    window.dispatchEvent(new Event("ocppgw:listeners-changed"));
  } catch (error) {
    showError(error);
  }
}

export async function render(container) {
  const results = h("div", { id: "listeners-table" });
  async function load() {
    try {
      const listeners = await get(BASE);
      results.replaceChildren(table([
        { title: "Name", cell: (l) => h("button", { type: "button", class: "link", onclick: () => (isViewer() ? null : editor(l)) }, l.name) },
        { title: "Type", cell: (l) => l.type },
        { title: "Address", cell: (l) => l.bind },
        { title: "Path", cell: (l) => l.websocket.path },
        { title: "Max connections", cell: (l) => l.max_connections },
        { title: "Connections", cell: (l) => l.status.current_connections },
        { title: "State", cell: (l) => tag(l.running ? "Running" : "Stopped", l.running ? "ok" : "off") },
      ], listeners, "No listener"));
    } catch (error) {
      showError(error);
    }
  }
  const onChange = () => load();
  window.addEventListener("ocppgw:listeners-changed", onChange);
  container.append(
    h("div", { class: "view-head" }, h("h1", {}, "Listeners"), h("span", { class: "spacer" }),
      h("button", { type: "button", class: "primary write", id: "add-listener", onclick: () => editor(null) }, "Add listener")),
    h("div", { class: "card" }, results));
  await load();
  return () => window.removeEventListener("ocppgw:listeners-changed", onChange);
}
