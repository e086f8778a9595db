// The session list: filters, then pages of /api/v1/sessions following "next".
"use strict";
let nextCursor = null;

function queryFromForm() {
  const params = new URLSearchParams();
  for (const [name, value] of new FormData(document.getElementById("filters"))) {
    if (!value) continue;
    params.set(name, name === "since" || name === "until" ? new Date(value).toISOString() : value);
  }
  return params;
}

async function load(append) {
  const params = queryFromForm();
  if (append && nextCursor) params.set("cursor", nextCursor);
  const body = await api("/api/v1/sessions?" + params.toString());
  const tbody = document.querySelector("#sessions tbody");
  if (!append) tbody.replaceChildren();
  for (const s of body.sessions) {
    const link = el("a", s.started, { href: "/sessions/" + encodeURIComponent(s.id), class: "session-link" });
    const channels = s.channels.map((c) => `${c.n}:${c.kind}`).join(" ");
    tbody.appendChild(row([link, s.user, s.resource, s.native_user, s.client_ip, s.status, channels]));
  }
  nextCursor = body.next;
  document.getElementById("more").hidden = !nextCursor;
}

document.getElementById("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  load(false).catch(showError);
});
document.getElementById("more").addEventListener("click", () => load(true).catch(showError));
whoAmI().then(() => load(false)).catch(showError);
