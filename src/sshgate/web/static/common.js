// Shared by the pages: every request goes to the JSON API (docs/api.md) with the session cookie;
// changes carry the CSRF token from <meta name="csrf-token">. No data ever becomes HTML: text only.
"use strict";
const csrfToken = () => document.querySelector('meta[name="csrf-token"]').content;

async function api(path, options = {}) {
  const init = { credentials: "same-origin", ...options, headers: { ...(options.headers || {}) } };
  if (init.method && init.method !== "GET") init.headers["X-CSRF-Token"] = csrfToken();
  const response = await fetch(path, init);
  if (response.status === 401) {
    window.location.href = "/signin?next=" + encodeURIComponent(window.location.pathname + window.location.search);
    throw new Error("not signed in");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function row(cells) {
  const tr = el("tr");
  for (const cell of cells) {
    const td = el("td");
    if (cell instanceof Node) td.appendChild(cell); else td.textContent = cell == null ? "" : String(cell);
    tr.appendChild(td);
  }
  return tr;
}

function showError(error) {
  const p = document.getElementById("error");
  p.textContent = String(error.message || error);
  p.hidden = false;
}

async function whoAmI() {
  const me = await api("/api/v1/me");
  document.getElementById("who").textContent = `${me.email} (${me.role})`;
  document.getElementById("signout").addEventListener("click", async () => {
    await fetch("/signout", { method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrfToken() } });
    window.location.href = "/";
  });
  return me;
}
