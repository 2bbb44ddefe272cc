// drover's dashboard: live figures over server-sent events. The page is whole without this
// script; it only keeps the figures marked data-live up to date while the page is open.
(function () {
  "use strict";
  var source = document.body && document.body.dataset.events;
  if (!source || !window.EventSource) {
    return;
  }
  var events = new EventSource(source);
  events.onmessage = function (message) {
    var figures;
    try {
      figures = JSON.parse(message.data);
    } catch (e) {
      return;
    }
    Object.keys(figures).forEach(function (name) {
      document.querySelectorAll('[data-live="' + name + '"]').forEach(function (el) {
        el.textContent = String(figures[name]);
        if (name === "status") {
          el.className = "status s-" + String(figures[name]).toLowerCase();
        }
      });
    });
    if ("finished" in figures && "total" in figures) {
      document.querySelectorAll("progress[data-live-progress]").forEach(function (bar) {
        bar.max = Math.max(1, figures.total);
        bar.value = figures.finished;
      });
    }
    document.body.dataset.updates = String(Number(document.body.dataset.updates || 0) + 1);
  };
  // The browser reconnects by itself after a dropped connection; nothing to do on error.
  window.addEventListener("pagehide", function () {
    events.close();
  });
})();
