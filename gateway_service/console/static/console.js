// The console's script: swaps in the HTML the server's event streams send, ticks the
// durations of running sessions, and posts the start and cancel actions. It renders
// nothing itself; every URL is relative to the page (data-base), as the server's are.
"use strict";

(function () {
  const base = document.body.dataset.base || "";
  const page = document.body.dataset.page;

  function pathOf(id) {
    return encodeURIComponent(id).replace(/%2F/g, "/");
  }

  function showProblem(text) {
    const banner = document.getElementById("problem");
    if (!banner) return;
    banner.textContent = text || "";
    banner.hidden = !text;
  }

  function formatDuration(seconds) {
    if (seconds < 60) return seconds.toFixed(1) + " s";
    const whole = Math.floor(seconds);
    const minutes = Math.floor(whole / 60);
    if (minutes < 60) return minutes + " min " + String(whole % 60).padStart(2, "0") + " s";
    return Math.floor(minutes / 60) + " h " + String(minutes % 60).padStart(2, "0") + " min";
  }

  function tick() {
    const now = Date.now() / 1000;
    for (const cell of document.querySelectorAll("[data-since]")) {
      const since = parseFloat(cell.dataset.since);
      if (!isNaN(since)) cell.textContent = formatDuration(Math.max(0, now - since));
    }
  }

  // A stream that the server refused (401 after a logout, 503 while draining) is not
  // retried by the browser: open a new one a little later.
  function stream(url, handlers) {
    let source = null;
    let done = false;
    function open() {
      source = new EventSource(url());
      for (const [name, handler] of Object.entries(handlers)) {
        source.addEventListener(name, handler);
      }
      source.addEventListener("end", () => { done = true; source.close(); });
      source.onopen = () => showProblem("");
      source.onerror = () => {
        if (!done && source.readyState === EventSource.CLOSED) {
          showProblem("Lost the live updates; trying again...");
          setTimeout(open, 3000);
        }
      };
    }
    open();
    return { restart() { if (source) source.close(); done = false; open(); } };
  }

  async function post(url, body) {
    const answer = await fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json" }, body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await answer.json(); } catch (e) { data = {}; }
    if (!answer.ok) {
      const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail);
      throw new Error(detail || answer.status + " " + answer.statusText);
    }
    return data;
  }

  function overview() {
    const form = document.getElementById("filters");
    const query = () => new URLSearchParams(new FormData(form)).toString();
    const live = stream(() => base + "console/events?" + query() + "&base=" + encodeURIComponent(base), {
      devices: (e) => { document.getElementById("devices").innerHTML = e.data; },
      sessions: (e) => { document.getElementById("sessions").innerHTML = e.data; tick(); },
      "device-options": (e) => {
        const select = document.getElementById("start-device");
        const chosen = select.value;
        select.innerHTML = e.data;
        if (chosen) select.value = chosen;
      },
      problem: (e) => showProblem(e.data),
    });
    let timer = null;
    function refilter() {
      clearTimeout(timer);
      timer = setTimeout(() => {
        history.replaceState(null, "", "?" + query());
        live.restart();
      }, 250);
    }
    form.addEventListener("input", refilter);
    form.addEventListener("submit", (e) => { e.preventDefault(); refilter(); });

    const start = document.getElementById("start-form");
    start.addEventListener("submit", async (e) => {
      e.preventDefault();
      const data = new FormData(start);
      const error = document.getElementById("start-error");
      error.textContent = "";
      try {
        const answer = await post(base + "console/api/sessions", {
          device_id: data.get("device_id"), request: data.get("request"), kind: data.get("kind"),
        });
        window.location.href = base + "sessions/" + pathOf(answer.session_id);
      } catch (err) {
        error.textContent = err.message;
      }
    });
  }

  function upsert(list, id, html, replace) {
    const existing = document.getElementById(id);
    if (existing) {
      if (replace) existing.outerHTML = html;
      return;
    }
    for (const empty of list.querySelectorAll(":scope > .empty")) empty.remove();
    list.insertAdjacentHTML("beforeend", html);
  }

  function session() {
    const id = document.getElementById("session").dataset.session;
    stream(() => base + "console/sessions/" + pathOf(id) + "/events", {
      head: (e) => { document.getElementById("head").innerHTML = e.data; tick(); },
      command: (e) => {
        const item = JSON.parse(e.data);
        upsert(document.getElementById("commands"), "cmd-" + item.id, item.html, item.replace);
      },
      turn: (e) => {
        const item = JSON.parse(e.data);
        const list = document.getElementById("turns");
        if (list) upsert(list, "turn-" + item.seq, item.html, true);
      },
      log: (e) => {
        const all = JSON.parse(e.data);
        document.getElementById("head").innerHTML = all.head;
        document.getElementById("commands").innerHTML = all.commands;
        const turns = document.getElementById("turns");
        if (turns) turns.innerHTML = all.turns;
        document.getElementById("result").innerHTML = all.result;
        tick();
      },
      problem: (e) => showProblem(e.data),
    });
    document.addEventListener("click", async (e) => {
      if (!(e.target instanceof Element) || e.target.id !== "cancel") return;
      e.target.disabled = true;
      try {
        await post(base + "console/api/sessions/" + pathOf(id) + "/cancel");
      } catch (err) {
        const error = document.getElementById("cancel-error");
        if (error) error.textContent = err.message;
        e.target.disabled = false;
      }
    });
  }

  tick();
  setInterval(tick, 1000);
  if (page === "overview") overview();
  if (page === "session") session();
})();
