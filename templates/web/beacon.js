// Reports a view of this article to the subscriber service (POST <base_url>/v/<slug>).
// A file of its own, not an inline script, so a Content-Security-Policy of
// "script-src 'self'; connect-src <base_url>" allows it. Not from a page opened from disk.
(function () {
  var script = document.currentScript;
  if (script && /^https?:$/.test(location.protocol) && navigator.sendBeacon) {
    navigator.sendBeacon(script.getAttribute("data-url"));
  }
})();
