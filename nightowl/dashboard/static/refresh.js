// nightowl dashboard: reload the page every data-refresh seconds while it is
// visible and nobody is typing in a form.  The pages work without it.
(function () {
  "use strict";
  var seconds = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
  if (!(seconds > 0)) { return; }
  window.setInterval(function () {
    var active = document.activeElement;
    var typing = active && (active.tagName === "INPUT" || active.tagName === "SELECT");
    if (document.visibilityState === "visible" && !typing) {
      window.location.reload();
    }
  }, seconds * 1000);
}());
