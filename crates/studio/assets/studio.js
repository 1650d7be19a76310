// dramaq studio: the little live behaviour on top of server-rendered pages. Vendored, no build.
// - the seasons table follows the server-sent events of /api/events;
// - a page whose <body data-refresh="/api/..."> names its JSON document re-reads it every two
//   seconds and reloads when it changed (a take arrived, a task moved on), unless the user is
//   typing or a video is playing.
"use strict";
(function () {
  var VOLATILE = { age_ms: 1, now_ms: 1, seen_ms: 1, expires_ms: 1, cooldown_ms: 1, eta_secs: 1 };
  function stable(text) {
    try {
      return JSON.stringify(JSON.parse(text), function (k, v) { return VOLATILE[k] ? undefined : v; });
    } catch (e) { return text; }
  }
  function busy() {
    var a = document.activeElement;
    if (a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA")) return true;
    var vids = document.querySelectorAll("video, audio");
    for (var i = 0; i < vids.length; i++) { if (!vids[i].paused) return true; }
    return false;
  }
  function money(v) { return "$" + Number(v).toFixed(2); }
  function human(secs) {
    if (secs === null || secs === undefined) return "—";
    if (secs < 60) return secs + "s";
    if (secs < 3600) return Math.floor(secs / 60) + "m " + (secs % 60) + "s";
    return Math.floor(secs / 3600) + "h " + Math.floor((secs % 3600) / 60) + "m";
  }
  function liveSeasons(table) {
    if (!window.EventSource) return;
    var es = new EventSource("/api/events");
    es.addEventListener("seasons", function (ev) {
      var doc = JSON.parse(ev.data);
      var known = {};
      doc.seasons.forEach(function (s) {
        known[s.season] = true;
        var row = table.querySelector('tr[data-season="' + CSS.escape(s.season) + '"]');
        if (!row) { location.reload(); return; }
        var set = function (f, text) { var c = row.querySelector('[data-field="' + f + '"]'); if (c) c.textContent = text; };
        row.querySelector('[data-field="progress"]').value = s.progress;
        set("stored", s.stored + " / " + s.total);
        set("dead", s.dead);
        set("spend", money(s.spend_usd) + " (+" + money(s.remaining_usd) + " to go)");
        set("budget", s.budget_usd == null ? "—"
          : money(s.budget_spent_usd) + " of " + money(s.budget_usd) + (s.parked ? " · PARKED (" + s.parked + ")" : ""));
        set("eta", human(s.eta_secs));
        set("states", Object.keys(s.states).map(function (k) { return k + " " + s.states[k]; }).join("  "));
      });
      table.dataset.updated = String(Date.now());
    });
  }
  function refresh(url) {
    var first = null;
    setInterval(function () {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (t) {
          if (t === null) return;
          var s = stable(t);
          if (first === null) { first = s; return; }
          if (s !== first && !busy()) location.reload();
        })
        .catch(function () {});
    }, 2000);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var table = document.querySelector('[data-live="seasons"]');
    if (table) liveSeasons(table);
    var url = document.body.dataset.refresh;
    if (url) refresh(url);
  });
})();
