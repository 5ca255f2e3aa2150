// The dashboard's shell: the login form, the navigation and a hash router (#/overview, #/clients,
// #/listeners, #/authentication, #/settings). Each view is a module exporting
// render(container) -> optional cleanup function (run when the user leaves the view).

import { clearSession, login, logout, session } from "./api.js";
import { closeDrawer, showError } from "./ui.js";
import * as gateway from "./gateway.js";
import * as clients from "./clients.js";
import * as listeners from "./listeners.js";
import * as authn from "./authn.js";

const VIEWS = {
  overview: gateway.overview,
  clients: clients.render,
  listeners: listeners.render,
  authentication: authn.render,
  settings: gateway.settings,
};

let cleanup = null;

function byId(id) {
  return document.getElementById(id);
}

function showLogin(message = "") {
  leaveView();
  closeDrawer();
  byId("shell").hidden = true;
  byId("login").hidden = false;
  byId("login-error").textContent = message;
  const password = byId("login-form").elements.password;
  password.value = "";
  password.focus();
}

function leaveView() {
  if (cleanup) cleanup();
  cleanup = null;
}

async function route() {
  const { token, role, username } = session();
  if (!token) {
    showLogin();
    return;
  }
  byId("login").hidden = true;
  byId("shell").hidden = false;
  document.body.classList.toggle("role-viewer", role !== "administrator");
  byId("whoami").textContent = `${username} (${role})`;
  const name = location.hash.replace(/^#\/?/, "") || "overview";
  if (!(name in VIEWS)) {
    location.hash = "#/overview";
    return;
  }
  for (const link of byId("nav").querySelectorAll("a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  byId("nav").classList.remove("open");
  leaveView();
  closeDrawer();
  const container = byId("view");
  container.replaceChildren();
  container.dataset.view = name;
  try {
    cleanup = (await VIEWS[name](container)) || null;
  } catch (error) {
    showError(error);
  }
}

function start() {
  byId("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const button = form.querySelector("button[type=submit]");
    button.disabled = true;
    try {
      await login(form.elements.username.value.trim(), form.elements.password.value);
      form.elements.password.value = "";
      byId("login-error").textContent = "";
      await route();
    } catch (error) {
      byId("login-error").textContent = `${error.code}: ${error.message}`;
    } finally {
      button.disabled = false;
    }
  });
  byId("logout").addEventListener("click", async () => {
    await logout();
    showLogin("You are logged out.");
  });
  byId("menu").addEventListener("click", () => byId("nav").classList.toggle("open"));
  byId("drawer-close").addEventListener("click", closeDrawer);
  byId("backdrop").addEventListener("click", closeDrawer);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !byId("drawer").hidden) closeDrawer();
  });
  window.addEventListener("hashchange", route);
  window.addEventListener("ocppgw:unauthorized", (event) => {
    clearSession();
    showLogin(`Your session ended (${event.detail}). Please log in again.`);
  });
  route();
}

start();
