// The management API from the page: the login token kept in sessionStorage, "Bearer" on every call,
// the API's {"code","message"} error bodies turned into ApiError, and a 401 sending the user back to
// the login form (the "ocppgw:unauthorized" event).

export const API = "/api/v5";
const TOKEN = "ocppgw.token";
const ROLE = "ocppgw.role";
const USER = "ocppgw.user";

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code);
    this.status = status;
    this.code = code;
  }
}

export function session() {
  return {
    token: sessionStorage.getItem(TOKEN),
    role: sessionStorage.getItem(ROLE) || "administrator",
    username: sessionStorage.getItem(USER) || "",
  };
}

export function clearSession() {
  for (const key of [TOKEN, ROLE, USER]) sessionStorage.removeItem(key);
}

async function parse(response) {
  if (response.status === 204) return null;
  const type = response.headers.get("content-type") || "";
  if (type.includes("json")) {
    try {
      return await response.json();
    } catch {
      return null;
    }
  }
  return await response.text();
}

function errorOf(response, data) {
  if (data && typeof data === "object" && typeof data.code === "string") {
    return new ApiError(response.status, data.code, data.message);
  }
  const text = typeof data === "string" && data ? data.slice(0, 200) : response.statusText;
  return new ApiError(response.status, `HTTP ${response.status}`, text);
}

async function send(path, init) {
  try {
    return await fetch(API + path, { cache: "no-store", ...init });
  } catch (error) {
    throw new ApiError(0, "NETWORK_ERROR", `The gateway cannot be reached (${error.message})`);
  }
}

export async function login(username, password) {
  const response = await send("/login", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ username, password }),
  });
  const data = await parse(response);
  if (!response.ok) throw errorOf(response, data);
  sessionStorage.setItem(TOKEN, data.token);
  sessionStorage.setItem(ROLE, data.role || "administrator");
  sessionStorage.setItem(USER, username);
  return data;
}

export async function logout() {
  const { token } = session();
  clearSession();
  if (token) {
    await send("/logout", { method: "POST", headers: { Authorization: `Bearer ${token}` } }).catch(() => {});
  }
}

// One call: {status, data, headers}; `json` is sent as a JSON body, `form` as multipart.
export async function call(method, path, { json, form } = {}) {
  const headers = { Authorization: `Bearer ${session().token || ""}` };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form;
  }
  const response = await send(path, { method, headers, body });
  const data = await parse(response);
  if (response.status === 401) {
    clearSession();
    const error = errorOf(response, data);
    window.dispatchEvent(new CustomEvent("ocppgw:unauthorized", { detail: error.message }));
    throw error;
  }
  if (!response.ok) throw errorOf(response, data);
  return { status: response.status, data, headers: response.headers };
}

export const get = async (path) => (await call("GET", path)).data;

// "?a=1&b=x" from an object, leaving out empty values.
export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== "") search.set(key, String(value));
  }
  const text = search.toString();
  return text ? `?${text}` : "";
}

// The sum of every sample of the counters named `names` in a Prometheus text exposition.
export function counterSums(text, names) {
  const sums = Object.fromEntries(names.map((name) => [name, 0]));
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const name = line.split(/[{\s]/, 1)[0];
    if (name in sums) {
      const value = Number(line.slice(line.lastIndexOf(" ") + 1));
      if (Number.isFinite(value)) sums[name] += value;
    }
  }
  return sums;
}
