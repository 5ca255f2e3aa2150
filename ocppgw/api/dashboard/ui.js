// Building blocks of the views: elements without innerHTML, toasts (errors show the API's code and
// message), a confirm dialog, the side drawer, forms described by field lists, tables and a pager.

export function h(tag, attrs = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else if (key === "class") element.className = value;
    else if (key === "value") element.value = value;
    else if (key in element && typeof value !== "string") element[key] = value;
    else element.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    element.append(child instanceof Node ? child : String(child));
  }
  return element;
}

export function svg(tag, attrs = {}, ...children) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [key, value] of Object.entries(attrs)) element.setAttribute(key, value);
  for (const child of children) element.append(child);
  return element;
}

const MAX_TOASTS = 3;

export function toast(message, { error = false, code = "" } = {}) {
  const box = document.getElementById("toasts");
  const item = h("div", { class: error ? "toast error" : "toast", role: error ? "alert" : "status" },
    code ? h("span", { class: "code" }, code) : null, message);
  item.addEventListener("click", () => item.remove());
  box.append(item);
  while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
  setTimeout(() => item.remove(), error ? 9000 : 4000);
}

// An API error (or any other) shown to the user: its code and message, as the API gave them.
export function showError(error) {
  if (error && error.status === 401) return; // app.js shows the login form with the message
  toast(error && error.message ? error.message : String(error), { error: true, code: error && error.code });
}

export function confirmAction(text, okLabel = "Confirm") {
  const dialog = document.getElementById("confirm");
  document.getElementById("confirm-text").textContent = text;
  document.getElementById("confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  dialog.showModal();
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
  });
}

export function openDrawer(title, ...content) {
  document.getElementById("drawer-title").textContent = title;
  document.getElementById("drawer-body").replaceChildren(...content);
  document.getElementById("drawer").hidden = false;
  document.getElementById("backdrop").hidden = false;
}

export function closeDrawer() {
  document.getElementById("drawer").hidden = true;
  document.getElementById("backdrop").hidden = true;
  document.getElementById("drawer-body").replaceChildren();
}

export function getPath(object, path) {
  return path.split(".").reduce((value, key) => (value == null ? undefined : value[key]), object);
}

function setPath(object, path, value) {
  const keys = path.split(".");
  const last = keys.pop();
  let target = object;
  for (const key of keys) {
    if (typeof target[key] !== "object" || target[key] === null) target[key] = {};
    target = target[key];
  }
  target[last] = value;
}

function mappingText(mapping) {
  return Object.entries(mapping || {}).map(([key, value]) => `${key} = ${value}`).join("\n");
}

function mappingOf(text) {
  const mapping = {};
  for (const line of text.split("\n")) {
    const at = line.indexOf("=");
    if (line.trim() && at > 0) mapping[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return mapping;
}

function input(field, value) {
  const name = field.key;
  if (field.type === "select") {
    const select = h("select", { name }, field.options.map((option) => h("option", { value: option }, option)));
    select.value = String(value ?? field.options[0]);
    return select;
  }
  if (field.type === "checkbox") return h("input", { type: "checkbox", name, checked: Boolean(value) });
  if (field.type === "textarea" || field.type === "mapping") {
    const text = field.type === "mapping" ? mappingText(value) : value ?? "";
    return h("textarea", { name, placeholder: field.placeholder, value: text });
  }
  const type = field.type === "password" ? "password" : field.type === "number" ? "number" : "text";
  return h("input", {
    type, name, value: value ?? "", placeholder: field.placeholder, required: field.required,
    autocomplete: type === "password" ? "new-password" : "off", readOnly: field.readonly,
  });
}

function fieldValue(field, element) {
  if (field.type === "checkbox") return element.checked;
  if (field.type === "mapping") return mappingOf(element.value);
  const text = element.value.trim();
  if (field.type === "number") return text === "" ? null : Number(text);
  if (field.type === "count") return /^\d+$/.test(text) ? Number(text) : text || null;
  if (field.type === "select" && field.numeric) return Number(text);
  return text === "" && field.emptyNull !== false ? null : text;
}

// A form of `fields` over `values`; read() is a copy of `values` with every field's value set.
export function buildForm(fields, values = {}) {
  const inputs = new Map();
  const labels = new Map();
  const nodes = fields.map((field) => {
    const element = input(field, getPath(values, field.key));
    inputs.set(field, element);
    const help = field.help ? h("span", { class: "help" }, field.help) : null;
    const label = field.type === "checkbox"
      ? h("label", { class: field.wide ? "check wide" : "check" }, element, field.label, help)
      : h("label", { class: field.wide ? "wide" : null }, field.label, element, help);
    labels.set(field, label);
    return label;
  });
  const read = () => {
    const result = structuredClone(values);
    for (const [field, element] of inputs) setPath(result, field.key, fieldValue(field, element));
    return result;
  };
  return { element: h("div", { class: "form-grid" }, nodes), read, inputs, labels };
}

// A table: columns [{title, cell(row) -> node or text, class}], an empty-state line.
export function table(columns, rows, emptyText = "Nothing to show") {
  const head = h("tr", {}, columns.map((column) => h("th", {}, column.title)));
  const body = rows.length
    ? rows.map((row) => h("tr", {}, columns.map((column) => h("td", { class: column.class }, column.cell(row)))))
    : [h("tr", { class: "empty" }, h("td", { colSpan: columns.length }, emptyText))];
  return h("div", { class: "table-wrap" }, h("table", {}, h("thead", {}, head), h("tbody", {}, body)));
}

// Previous/next for the API's {"page","limit","hasnext","count"} meta.
export function pager(meta, go) {
  const total = meta.count !== undefined ? ` of ${Math.max(1, Math.ceil(meta.count / meta.limit))}` : "";
  return h("div", { class: "pager" },
    h("button", { type: "button", class: "small", disabled: meta.page <= 1, onclick: () => go(meta.page - 1) }, "Previous"),
    h("span", {}, `Page ${meta.page}${total}`),
    h("button", { type: "button", class: "small", disabled: !meta.hasnext, onclick: () => go(meta.page + 1) }, "Next"));
}

export function tag(text, kind) {
  return h("span", { class: `tag ${kind}` }, text);
}

export function details(pairs) {
  return h("dl", { class: "details" }, pairs.flatMap(([label, value]) => [h("dt", {}, label), h("dd", {}, value ?? "—")]));
}

const pad = (n) => String(n).padStart(2, "0");

export function formatTime(text) {
  if (!text) return "—";
  const t = new Date(text);
  if (Number.isNaN(t.getTime())) return text;
  return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())} ${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
}

export function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const days = Math.floor(s / 86400);
  const clock = `${pad(Math.floor((s % 86400) / 3600))}:${pad(Math.floor((s % 3600) / 60))}:${pad(s % 60)}`;
  return days ? `${days}d ${clock}` : clock;
}

export function formatBytes(n) {
  if (typeof n !== "number") return n;
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit ? value.toFixed(1) : value} ${units[unit]}`;
}

export function isViewer() {
  return document.body.classList.contains("role-viewer");
}
