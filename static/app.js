/* Bindify UI helpers. Progressive enhancement only: every page works without this file.
   - Copy buttons (hidden until this script shows them) copy the field or block they name.
   - On a page that displayed one-time secrets, the claim is removed from the address bar, so
     the secret-bearing link does not stay in history or get re-opened. */
"use strict";
(function () {
  function copyFrom(id, button) {
    var el = document.getElementById(id);
    if (!el) { return; }
    var text = el.value !== undefined && el.tagName === "INPUT" ? el.value : el.textContent;
    var done = function () {
      var old = button.textContent;
      button.textContent = "Copied";
      window.setTimeout(function () { button.textContent = old; }, 1500);
    };
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(done, function () { select(el); });
    } else {
      select(el);
    }
  }
  function select(el) {
    if (el.select) { el.select(); return; }
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }
  document.addEventListener("DOMContentLoaded", function () {
    var buttons = document.querySelectorAll("button.copy[data-copy]");
    Array.prototype.forEach.call(buttons, function (b) {
      b.hidden = false;
      b.addEventListener("click", function () { copyFrom(b.getAttribute("data-copy"), b); });
    });
    if (window.location.search.indexOf("claim=") !== -1 && window.history.replaceState) {
      window.history.replaceState(null, "", window.location.pathname + window.location.hash);
    }
  });
})();
