// The admin UI's only script: live progress of running campaigns. Every
// element with data-progress-url is refreshed from that JSON endpoint every
// two seconds while its campaign is sending; when it stops, the page is
// loaded again once, so that its counts and buttons are the final ones.
// Without scripts the page still shows the progress as of its loading.
"use strict";
(function () {
  function refresh(el) {
    fetch(el.dataset.progressUrl, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (p) {
        if (!p) { return; }
        var bar = el.querySelector("progress");
        if (bar) { bar.max = Math.max(p.total, 1); bar.value = p.done; }
        var text = el.querySelector("[data-progress-text]");
        if (text) { text.textContent = p.text; }
        var status = el.querySelector("[data-progress-status]");
        if (status) { status.textContent = p.status; }
        if (p.running) {
          setTimeout(function () { refresh(el); }, 2000);
        } else {
          window.location.reload();
        }
      })
      .catch(function () { setTimeout(function () { refresh(el); }, 5000); });
  }
  document.querySelectorAll("[data-progress-url]").forEach(function (el) {
    if (el.dataset.running === "true") { setTimeout(function () { refresh(el); }, 1000); }
  });
})();
