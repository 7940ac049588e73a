// Letterpress console: small progressive enhancements, each optional (the pages work
// without JavaScript). Served from the site itself, as the CSP (script-src 'self') asks.
"use strict";

// A schedule form left to the browser's time zone: fill in the editor's own IANA zone.
function fillTimeZones() {
  let zone = "";
  try {
    zone = Intl.DateTimeFormat().resolvedOptions().timeZone || "";
  } catch (e) {
    return;
  }
  if (!zone) return;
  for (const field of document.querySelectorAll("input[data-zone=browser]")) {
    field.value = zone;
    field.removeAttribute("data-zone");
  }
}

document.addEventListener("DOMContentLoaded", fillTimeZones);
document.addEventListener("htmx:afterSettle", fillTimeZones);
