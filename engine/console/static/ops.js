// The ops pages: live "time left", a confirmation before closing, the flow's diagram.
(function () {
  "use strict";
  function tick() {
    const now = Date.now();
    document.querySelectorAll(".left[data-seconds]").forEach((el) => {
      if (!el.dataset.t0) el.dataset.t0 = String(now);
      const s = Math.max(0, Number(el.dataset.seconds) - Math.floor((now - Number(el.dataset.t0)) / 1000));
      el.textContent = Math.floor(s / 60) + ":" + String(s % 60).padStart(2, "0");
    });
  }
  setInterval(tick, 500);
  tick();

  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (ev) => {
      if (!window.confirm(form.dataset.confirm)) ev.preventDefault();
    });
  });

  if (window.mermaid) {
    window.mermaid.initialize({startOnLoad: false, securityLevel: "strict", theme: "neutral"});
    window.mermaid.run({querySelector: "pre.mermaid"});
  }
})();
