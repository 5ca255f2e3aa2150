// Authentication: choose and configure the backend (create, change, delete), and for the built-in
// database its users: search, add, edit, delete and import (CSV or JSON, hashed or clear text).

import { call, get, query } from "./api.js";
import {
  buildForm, closeDrawer, confirmAction, details, h, isViewer, openDrawer, pager, showError, table, tag, toast,
} from "./ui.js";

const BASE = "/gateways/ocpp/authentication";
const BACKENDS = ["built_in_database", "http", "jwt", "postgresql", "mysql", "redis", "mongodb"];
const HASHING = new Set(["built_in_database", "postgresql", "mysql", "redis", "mongodb"]);
const ALGORITHM = (values) => (values.password_hash_algorithm || {}).name;
const LIMIT = 50;

const text = (key, label, extra = {}) => ({ key, label, ...extra });
const DATABASE = [
  text("server", "Server", { placeholder: "127.0.0.1:5432" }), text("database", "Database"),
  text("username", "Username"), text("password", "Password", { type: "password" }),
  text("pool_size", "Pool size", { type: "number" }),
];
const PRIORITY = text("hashing_priority", "Hashing priority", {
  type: "select", options: ["idle", "low"], show: (v) => ["bcrypt", "pbkdf2"].includes(ALGORITHM(v)),
  help: "idle: bcrypt only uses CPU nothing else wants; low: nice 10, a share of a busy machine",
});
const FIELDS = {
  built_in_database: [text("user_id_type", "User ID type", { type: "select", options: ["clientid", "username"] }), PRIORITY],
  http: [
    text("method", "Method", { type: "select", options: ["post", "get"] }),
    text("url", "URL", { placeholder: "http://127.0.0.1:8080/auth", wide: true }),
    text("headers", "Headers", { type: "mapping", wide: true, placeholder: "content-type = application/json" }),
    text("body", "Body", { type: "mapping", wide: true, placeholder: "clientid = ${clientid}\npassword = ${password}" }),
  ],
  jwt: [
    text("from", "Token from", { type: "select", options: ["password", "username"] }),
    text("algorithm", "Algorithm", { type: "select", options: ["hmac-based", "public-key"] }),
    text("secret", "Secret", { type: "password", help: "hmac-based" }),
    text("secret_base64_encoded", "Secret is base64", { type: "checkbox" }),
    text("public_key", "Public key file", { help: "public-key, without JWKS" }),
    text("use_jwks", "Use JWKS", { type: "checkbox" }),
    text("endpoint", "JWKS endpoint"), text("refresh_interval", "JWKS refresh interval", { placeholder: "300s" }),
    text("verify_claims", "Verify claims", { type: "mapping", wide: true, placeholder: "sub = ${clientid}" }),
  ],
  postgresql: [...DATABASE, text("query", "Query", { type: "textarea", wide: true }), PRIORITY],
  mysql: [...DATABASE, text("query", "Query", { type: "textarea", wide: true }), PRIORITY],
  redis: [
    text("redis_type", "Redis type", { type: "select", options: ["single"] }),
    ...DATABASE.filter((f) => f.key !== "username"), text("cmd", "Command", { wide: true, placeholder: "HMGET mqtt_user:${clientid} password_hash salt" }),
    PRIORITY,
  ],
  mongodb: [
    text("mongo_type", "MongoDB type", { type: "select", options: ["single"] }), ...DATABASE,
    text("collection", "Collection"), text("filter", "Filter", { type: "mapping", wide: true, placeholder: "clientid = ${clientid}" }),
    text("password_hash_field", "Password hash field"), text("salt_field", "Salt field"),
    text("is_superuser_field", "Superuser field"), text("auth_source", "Auth source"), PRIORITY,
  ],
};
const HASH_FIELDS = [
  text("password_hash_algorithm.name", "Password hash", { type: "select", options: ["plain", "md5", "sha", "sha256", "sha512", "bcrypt", "pbkdf2"] }),
  text("password_hash_algorithm.salt_position", "Salt position", { type: "select", options: ["suffix", "prefix", "disable"], show: (v) => !["bcrypt", "pbkdf2"].includes(ALGORITHM(v)) }),
  text("password_hash_algorithm.salt_rounds", "Salt rounds", { type: "number", show: (v) => ALGORITHM(v) === "bcrypt" }),
  text("password_hash_algorithm.mac_fun", "MAC function", { type: "select", options: ["sha256", "sha", "sha224", "sha384", "sha512"], show: (v) => ALGORITHM(v) === "pbkdf2" }),
  text("password_hash_algorithm.iterations", "Iterations", { type: "number", show: (v) => ALGORITHM(v) === "pbkdf2" }),
  text("password_hash_algorithm.dk_length", "Derived key length", { type: "number", show: (v) => ALGORITHM(v) === "pbkdf2" }),
];
const COMMON = [
  text("request_timeout", "Request timeout", { placeholder: "5s", show: (v) => v.backend !== "built_in_database" }),
  text("cache_ttl", "Cache TTL", { placeholder: "0s", help: "how long an accepted password is remembered" }),
];
const DEFAULTS = {
  mechanism: "password_based", user_id_type: "clientid", method: "post", from: "password", algorithm: "hmac-based",
  redis_type: "single", mongo_type: "single", hashing_priority: "idle", password_hash_algorithm: { name: "sha256", salt_position: "suffix" },
};

function fieldsOf(backend) {
  return [...FIELDS[backend], ...(HASHING.has(backend) ? HASH_FIELDS : []), ...COMMON];
}

// The authenticator object to send: the backend's own keys only, the hash settings of its algorithm.
function bodyOf(backend, values) {
  const body = { mechanism: backend === "jwt" ? "jwt" : "password_based", backend, enable: true };
  for (const field of [...FIELDS[backend], ...COMMON]) body[field.key] = values[field.key];
  if (HASHING.has(backend)) {
    const a = values.password_hash_algorithm || {};
    body.password_hash_algorithm = a.name === "bcrypt" ? { name: a.name, salt_rounds: a.salt_rounds }
      : a.name === "pbkdf2" ? { name: a.name, mac_fun: a.mac_fun, iterations: a.iterations, dk_length: a.dk_length }
        : { name: a.name, salt_position: a.salt_position };
  }
  if (values.ssl && values.backend === backend) body.ssl = values.ssl;
  return body;
}

function settingsForm(current, reload) {
  const box = h("div", { id: "authn-settings" });
  const backendSelect = h("select", { name: "backend", id: "authn-backend", disabled: isViewer() },
    BACKENDS.map((b) => h("option", { value: b }, b)));
  backendSelect.value = current ? current.backend : "built_in_database";
  let form = null;
  const draw = (values) => {
    const fields = fieldsOf(backendSelect.value);
    form = buildForm(fields, { ...DEFAULTS, ...values, backend: backendSelect.value });
    const refreshVisible = () => {
      const now = form.read();
      for (const field of fields) if (field.show) form.labels.get(field).hidden = !field.show(now);
    };
    form.element.addEventListener("change", refreshVisible);
    refreshVisible();
    box.replaceChildren(form.element);
  };
  backendSelect.addEventListener("change", () => draw(form ? form.read() : {}));
  draw(current || {});

  const save = h("button", { type: "submit", class: "primary write" }, current ? "Save" : "Create");
  const remove = current
    ? h("button", { type: "button", class: "danger write", onclick: async () => {
      const users = current.backend === "built_in_database" ? " and every built-in user" : "";
      if (!(await confirmAction(`Remove the authenticator${users}? Every charge point may then connect.`, "Remove"))) return;
      try {
        await call("DELETE", BASE);
        toast("Authentication removed");
        await reload();
      } catch (error) {
        showError(error);
      }
    } }, "Remove authentication")
    : null;
  const element = h("form", { class: "card", id: "authn-form" },
    current ? null : h("p", { class: "muted" }, "No authentication is configured: every charge point that connects is let in. Choose a backend to check their passwords."),
    h("label", {}, "Backend", backendSelect), box,
    h("div", { class: "form-actions" }, remove, save));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const body = bodyOf(backendSelect.value, { ...form.read(), ssl: current && current.ssl, backend: current && current.backend });
    save.disabled = true;
    try {
      await call(current ? "PUT" : "POST", BASE, { json: body });
      toast(current ? "Authentication saved: applies to the next handshake" : "Authentication created");
      await reload();
    } catch (error) {
      showError(error);
    } finally {
      save.disabled = false;
    }
  });
  return element;
}

function userEditor(user, idLabel, done) {
  const isNew = user === null;
  const fields = [
    ...(isNew ? [text("user_id", idLabel, { required: true })] : []),
    text("password", isNew ? "Password" : "New password", { type: "password", required: isNew, help: isNew ? null : "empty: unchanged" }),
    text("is_superuser", "Superuser", { type: "checkbox" }),
  ];
  const form = buildForm(fields, isNew ? { is_superuser: false } : user);
  const save = h("button", { type: "submit", class: "primary" }, isNew ? "Add" : "Save");
  const element = h("form", { id: "user-form" }, form.element, h("div", { class: "form-actions" },
    h("button", { type: "button", class: "ghost", onclick: closeDrawer }, "Cancel"), save));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = form.read();
    save.disabled = true;
    try {
      if (isNew) {
        await call("POST", `${BASE}/users`, { json: { user_id: values.user_id, password: values.password, is_superuser: values.is_superuser } });
        toast(`User ${values.user_id} added`);
      } else {
        const body = { is_superuser: values.is_superuser };
        if (values.password) body.password = values.password;
        await call("PUT", `${BASE}/users/${encodeURIComponent(user.user_id)}`, { json: body });
        toast(`User ${user.user_id} changed`);
      }
      closeDrawer();
      await done();
    } catch (error) {
      showError(error);
    } finally {
      save.disabled = false;
    }
  });
  openDrawer(isNew ? "Add user" : `User ${user.user_id}`, element);
}

function importer(done) {
  const file = h("input", { type: "file", name: "filename", accept: ".csv,.json", required: true });
  const kind = h("select", { name: "type" }, h("option", { value: "hash" }, "hashed (password_hash, salt)"),
    h("option", { value: "plain" }, "clear text (password)"));
  const result = h("div", { id: "import-result" });
  const go = h("button", { type: "submit", class: "primary" }, "Import");
  const element = h("form", { id: "import-form" },
    h("label", {}, "CSV or JSON file", file, h("span", { class: "help" }, "The reference's user files: user_id, password_hash, salt, is_superuser (or password with clear text).")),
    h("label", {}, "Passwords in the file", kind), result,
    h("div", { class: "form-actions" }, h("button", { type: "button", class: "ghost", onclick: closeDrawer }, "Close"), go));
  element.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!file.files.length) return;
    const form = new FormData();
    form.append("filename", file.files[0], file.files[0].name);
    go.disabled = true;
    try {
      const { data } = await call("POST", `${BASE}/import_users${query({ type: kind.value === "plain" ? "plain" : "" })}`, { form });
      result.replaceChildren(h("h3", {}, "Imported"), details(Object.entries(data)));
      toast(`Imported ${data.success} of ${data.total} user(s)`);
      await done();
    } catch (error) {
      showError(error);
    } finally {
      go.disabled = false;
    }
  });
  openDrawer("Import users", element);
}

function usersPanel(current) {
  const idLabel = current.user_id_type === "username" ? "Username" : "Client ID";
  let page = 1;
  const results = h("div", { id: "users-table" });
  const search = h("input", { type: "search", name: "like_user_id", placeholder: `Search by ${idLabel.toLowerCase()}` });
  const superuser = h("select", { name: "is_superuser" }, h("option", { value: "" }, "All users"),
    h("option", { value: "true" }, "Superusers"), h("option", { value: "false" }, "Not superusers"));
  const toolbar = h("form", { class: "toolbar", id: "users-search" }, search, superuser, h("button", { type: "submit" }, "Search"),
    h("span", { class: "spacer" }),
    h("button", { type: "button", class: "write", id: "import-users", onclick: () => importer(load) }, "Import"),
    h("button", { type: "button", class: "primary write", id: "add-user", onclick: () => userEditor(null, idLabel, load) }, "Add user"));
  toolbar.addEventListener("submit", (event) => {
    event.preventDefault();
    page = 1;
    load();
  });
  async function removeUser(user) {
    if (!(await confirmAction(`Delete user ${user.user_id}?`, "Delete"))) return;
    try {
      await call("DELETE", `${BASE}/users/${encodeURIComponent(user.user_id)}`);
      toast(`User ${user.user_id} deleted`);
    } catch (error) {
      showError(error);
    }
    await load();
  }
  async function load() {
    try {
      const answer = await get(`${BASE}/users${query({ like_user_id: search.value.trim(), is_superuser: superuser.value, page, limit: LIMIT })}`);
      results.replaceChildren(table([
        { title: idLabel, cell: (u) => u.user_id },
        { title: "Superuser", cell: (u) => (u.is_superuser ? tag("yes", "ok") : tag("no", "off")) },
        { title: "", class: "actions", cell: (u) => [
          h("button", { type: "button", class: "small write", onclick: () => userEditor(u, idLabel, load) }, "Edit"),
          h("button", { type: "button", class: "small danger-text write", onclick: () => removeUser(u) }, "Delete")] },
      ], answer.data, "No user"), pager(answer.meta, (next) => {
        page = next;
        load();
      }));
    } catch (error) {
      showError(error);
    }
  }
  load();
  return h("div", { class: "card" }, toolbar, results);
}

export async function render(container) {
  let tab = "settings";
  async function reload() {
    const current = (await call("GET", BASE)).data; // null: 204, no authenticator
    const builtIn = current && current.backend === "built_in_database";
    if (!builtIn) tab = "settings";
    const tabs = h("div", { class: "tabs" },
      h("button", { type: "button", class: tab === "settings" ? "active" : "", onclick: () => { tab = "settings"; reload().catch(showError); } }, "Settings"),
      builtIn ? h("button", { type: "button", id: "users-tab", class: tab === "users" ? "active" : "", onclick: () => { tab = "users"; reload().catch(showError); } }, "Users") : null);
    const state = current ? tag(current.backend, "ok") : tag("none", "off");
    container.replaceChildren(h("div", { class: "view-head" }, h("h1", {}, "Authentication"), state), tabs,
      tab === "users" ? usersPanel(current) : settingsForm(current, reload));
  }
  await reload();
}
