// Clients: the connected charge points, searched by id, paged; kick one; a detail drawer with its
// connection, counters and subscriptions.

import { call, get, query } from "./api.js";
import {
  confirmAction, details, formatBytes, formatTime, h, openDrawer, pager, showError, table, tag, toast,
} from "./ui.js";

const LIMIT = 20;
const BASE = "/gateways/ocpp/clients";
const clientPath = (cid) => `${BASE}/${encodeURIComponent(cid)}`;

function address(client) {
  const host = client.ip_address && client.ip_address.includes(":") ? `[${client.ip_address}]` : client.ip_address;
  return client.port ? `${host}:${client.port}` : host || "—";
}

async function showClient(cid) {
  try {
    const [client, subscriptions] = await Promise.all([get(clientPath(cid)), get(`${clientPath(cid)}/subscriptions`)]);
    openDrawer(`Client ${client.clientid}`,
      h("h3", {}, "Connection"),
      details([
        ["Node", client.node], ["Client ID", client.clientid], ["Username", client.username],
        ["Protocol", `${client.proto_name} ${client.proto_ver}`], ["IP address", address(client)],
        ["Mountpoint", client.mountpoint], ["Heartbeat (keepalive)", `${client.keepalive} s`],
        ["Connected at", formatTime(client.connected_at)],
        ["Status", tag(client.connected ? "Connected" : "Disconnected", client.connected ? "ok" : "off")],
      ]),
      h("h3", {}, "Session"),
      details([
        ["Subscriptions", `${client.subscriptions_cnt} / ${client.subscriptions_max}`],
        ["In flight", `${client.inflight_cnt} / ${client.inflight_max}`],
        ["Queue", `${client.mqueue_len} / ${client.mqueue_max}`], ["Queue dropped", client.mqueue_dropped],
      ]),
      h("h3", {}, "Traffic"),
      details([
        ["Bytes received", formatBytes(client.recv_oct)], ["Bytes sent", formatBytes(client.send_oct)],
        ["Messages received", client.recv_cnt], ["Messages sent", client.send_cnt],
      ]),
      h("h3", {}, "Subscriptions"),
      table([
        { title: "Topic", cell: (s) => h("code", {}, s.topic) },
        { title: "QoS", cell: (s) => s.qos },
      ], subscriptions, "No subscription"));
  } catch (error) {
    showError(error);
  }
}

export async function render(container) {
  let page = 1;
  let search = "";
  const results = h("div", { id: "clients-table" });
  const input = h("input", { type: "search", name: "like_clientid", placeholder: "Search by client ID" });
  const searchForm = h("form", { class: "toolbar", id: "clients-search" }, input,
    h("button", { type: "submit" }, "Search"),
    h("button", { type: "button", class: "ghost", onclick: () => load() }, "Refresh"));
  searchForm.addEventListener("submit", (event) => {
    event.preventDefault();
    search = input.value.trim();
    page = 1;
    load();
  });

  async function kick(cid) {
    if (!(await confirmAction(`Kick ${cid}? Its WebSocket is closed (1000); it may connect again.`, "Kick out"))) {
      return;
    }
    try {
      await call("DELETE", clientPath(cid));
      toast(`${cid} kicked out`);
    } catch (error) {
      showError(error);
    }
    await load();
  }

  async function load() {
    try {
      const answer = await get(BASE + query({ like_clientid: search, page, limit: LIMIT }));
      if (answer.data.length === 0 && page > 1) {
        page -= 1;
        await load();
        return;
      }
      results.replaceChildren(
        table([
          { title: "Client ID", cell: (c) => h("button", { type: "button", class: "link", onclick: () => showClient(c.clientid) }, c.clientid) },
          { title: "Username", cell: (c) => c.username ?? "—" },
          { title: "IP address", cell: address },
          { title: "Status", cell: (c) => tag(c.connected ? "Connected" : "Disconnected", c.connected ? "ok" : "off") },
          { title: "Connected at", cell: (c) => formatTime(c.connected_at) },
          { title: "", class: "actions", cell: (c) => h("button", { type: "button", class: "small danger-text write", onclick: () => kick(c.clientid) }, "Kick out") },
        ], answer.data, search ? `No connected charge point matches "${search}"` : "No charge point is connected"),
        pager(answer.meta, (next) => {
          page = next;
          load();
        }));
    } catch (error) {
      showError(error);
    }
  }

  container.append(h("div", { class: "view-head" }, h("h1", {}, "Clients")), h("div", { class: "card" }, searchForm, results));
  await load();
}
