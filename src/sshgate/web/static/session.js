// One session: facts, decisions, channels with their events, playback, live view, terminate.
"use strict";
const sessionId = decodeURIComponent(window.location.pathname.split("/").pop());
const base = "/api/v1/sessions/" + encodeURIComponent(sessionId);
let livePlayer = null;
let player = null;

function play(n) {
  const box = document.getElementById("player-box");
  box.hidden = false;
  document.getElementById("player-title").textContent = `Playback of channel ${n}`;
  const target = document.getElementById("player");
  if (player) player.dispose();
  target.replaceChildren();
  player = AsciinemaPlayer.create(`${base}/channels/${n}/cast`, target, { controls: true, fit: "width", autoPlay: true, idleTimeLimit: 2 });
}

// The live route as an asciinema-player driver: the player's own "eventsource" driver ends on
// an event named "done", the API's is "end" (docs/api.md), so this one listens for that.
function liveDriver(url, cols, rows, onEnd) {
  return ({ dispatch }) => {
    let source = null;
    return {
      play() {
        if (source) return true;
        dispatch("play");
        dispatch("reset", { size: { cols, rows } });
        dispatch("playing");
        source = new EventSource(url);
        source.onmessage = (message) => {
          const [, code, text] = JSON.parse(message.data);
          if (code === "o") dispatch("output", text);
        };
        source.addEventListener("end", () => {
          source.close();
          dispatch("ended", { message: "Session ended" });
          onEnd();
        });
        return true;
      },
      stop() {
        if (source) source.close();
      },
    };
  };
}

function watch(c) {
  const box = document.getElementById("live-box");
  box.hidden = false;
  document.getElementById("live-title").textContent = `Live: channel ${c.n}`;
  document.getElementById("live-ended").hidden = true;
  const target = document.getElementById("live");
  if (livePlayer) livePlayer.dispose();
  target.replaceChildren();
  const [cols, rows] = c.size || [80, 24];
  const ended = () => { document.getElementById("live-ended").hidden = false; };
  livePlayer = AsciinemaPlayer.create(liveDriver(`${base}/channels/${c.n}/live`, cols, rows, ended), target,
    { controls: false, fit: "width", autoPlay: true });
}

function facts(doc) {
  const dl = document.getElementById("facts");
  const shown = [["User", doc.user], ["Identity", doc.identity], ["Resource", doc.resource], ["Native user", doc.native_user],
    ["Client address", doc.client_ip], ["Client", doc.client_version], ["Auth method", doc.auth_method], ["Status", doc.status],
    ["End reason", doc.end_reason], ["Terminated by", doc.terminated_by], ["Started", doc.started], ["Ended", doc.ended]];
  for (const [name, value] of shown) {
    if (value === undefined || value === null) continue;
    dl.appendChild(el("dt", name));
    dl.appendChild(el("dd", value, { id: "fact-" + name.toLowerCase().replace(/ /g, "-") }));
  }
  const verify = document.getElementById("verify");
  verify.textContent = `Manifest check: ${doc.verify.ok ? "OK" : "FAILED"}: ${doc.verify.detail}`;
  verify.className = doc.verify.ok ? "ok" : "bad";
}

function decisions(doc) {
  const tbody = document.querySelector("#decisions tbody");
  for (const d of doc.decisions) {
    const request = [d.kind, d.command, d.subsystem, d.operation, d.path, d.host, d.port].filter((x) => x != null).join(" ");
    tbody.appendChild(row([d.at, d.stage, d.action, request, d.reason, d.message]));
  }
}

function channels(doc) {
  const box = document.getElementById("channels");
  for (const c of doc.channels) {
    const div = el("div", null, { class: "channel", id: `channel-${c.n}` });
    const what = [c.kind, c.command, c.subsystem, c.host && `${c.host}:${c.port}`].filter(Boolean).join(" ");
    div.appendChild(el("strong", `#${c.n} ${what}`));
    div.appendChild(el("span", `  in ${c.bytes_in} B, out ${c.bytes_out} B, exit ${c.exit_status ?? "-"}  `));
    if (c.events) {
      const table = el("table", null, { class: "events" });
      table.appendChild(row(["t", "op / direction", "path / file / target", "bytes", "status"]));
      for (const e of c.events) {
        table.appendChild(row([e.t, e.op || e.direction, [e.path || e.file || e.host, e.target || e.port].filter((x) => x != null).join(" → "),
          e.bytes ?? [e.bytes_in, e.bytes_out].filter((x) => x != null).join("/"), e.status]));
      }
      div.appendChild(table);
    } else if (c.kind === "shell" || c.kind === "exec") {
      const playButton = el("button", "Play", { type: "button", class: "play", "data-channel": c.n });
      playButton.addEventListener("click", () => play(c.n));
      div.appendChild(playButton);
      if (doc.status === "active" && !c.closed_at) {
        const liveButton = el("button", "Watch live", { type: "button", class: "watch", "data-channel": c.n });
        liveButton.addEventListener("click", () => watch(c));
        div.appendChild(liveButton);
      }
    }
    box.appendChild(div);
  }
}

async function main() {
  document.getElementById("session-id").textContent = sessionId;
  const me = await whoAmI();
  const doc = await api(base);
  facts(doc);
  decisions(doc);
  channels(doc);
  const terminate = document.getElementById("terminate");
  if (me.role === "admin" && doc.status === "active") {
    terminate.hidden = false;
    terminate.addEventListener("click", async () => {
      const result = document.getElementById("terminate-result");
      try {
        await api(base + "/terminate", { method: "POST" });
        result.textContent = "terminated";
      } catch (error) {
        result.textContent = String(error.message || error);
      }
    });
  }
}
main().catch(showError);
