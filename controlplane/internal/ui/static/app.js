// Outpost dashboard: the little the pages need from a script. Everything
// works without it; it only adds a confirmation dialog (forms with
// data-confirm: deleting a subscription) and copy buttons. The PKI's
// irreversible actions (revoke, disable, decommission) ask for a ticked
// checkbox in the form instead, which needs no script.
(function () {
  "use strict";
  // Forms with data-confirm ask before they submit.
  document.addEventListener("submit", function (ev) {
    var f = ev.target;
    var msg = f.getAttribute && f.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) {
      ev.preventDefault();
    }
  });
  // Buttons with data-copy="<element id>" copy that element's text.
  document.addEventListener("click", function (ev) {
    var b = ev.target.closest ? ev.target.closest("[data-copy]") : null;
    if (!b) {
      return;
    }
    var el = document.getElementById(b.getAttribute("data-copy"));
    if (!el || !navigator.clipboard) {
      return;
    }
    navigator.clipboard.writeText(el.textContent.trim()).then(function () {
      var old = b.textContent;
      b.textContent = "Copied";
      setTimeout(function () { b.textContent = old; }, 1500);
    });
  });
})();
