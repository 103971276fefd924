// Conveyor dashboard: the little the pages need beyond htmx.
// Every page reads without it; this only keeps a followed log in view.
(function () {
  "use strict";
  // A log that is scrolled to its end stays at its end as lines arrive;
  // one scrolled up (someone is reading) is left where it is.
  var atEnd = true;
  document.addEventListener("scroll", function () {
    var log = document.getElementById("logs");
    if (!log) return;
    atEnd = log.getBoundingClientRect().bottom <= window.innerHeight + 40;
  }, { passive: true });
  document.addEventListener("htmx:sseMessage", function (e) {
    var log = document.getElementById("logs");
    if (log && e.target === log && atEnd) {
      var last = log.lastElementChild;
      if (last) last.scrollIntoView({ block: "end" });
    }
  });
})();
