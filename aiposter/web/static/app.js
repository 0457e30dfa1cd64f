// ai-poster: small behaviour on top of htmx. No eval, so the pages run under a strict Content-Security-Policy.
// A polling refresh never replaces the part of the page the keyboard focus is in: it waits for the next tick.
document.addEventListener("htmx:beforeRequest", function (event) {
  var poller = event.detail.elt;
  if (!poller.hasAttribute("data-poll")) return;
  var target = event.detail.target || poller;
  if (target.contains(document.activeElement) || poller.contains(document.activeElement)) {
    event.preventDefault();
  }
});

// The Drive folder picker (watch form): Enter in its search box searches instead of sending the form;
// after browsing, the keyboard focus goes to the new list's heading; "Choose" fills the folder field.
document.addEventListener("keydown", function (event) {
  if (event.key === "Enter" && event.target.hasAttribute && event.target.hasAttribute("data-no-submit")) {
    event.preventDefault();
  }
});
document.addEventListener("htmx:afterSwap", function (event) {
  var trigger = event.detail.requestConfig && event.detail.requestConfig.elt;
  if (trigger && trigger.hasAttribute("data-no-submit")) return;  // typing a search: keep the focus there
  var heading = event.detail.target.querySelector("[data-focus-after-swap]");
  if (heading) heading.focus();
});
document.addEventListener("click", function (event) {
  var button = event.target.closest && event.target.closest("[data-pick-folder]");
  if (!button) return;
  var folder = document.getElementById("folder");
  folder.value = button.getAttribute("data-pick-folder");
  var drive = document.querySelector('input[name="source"][value="google_drive"]');
  if (drive) drive.checked = true;
  var picked = document.getElementById("picked");
  picked.textContent = "Chosen: ";
  var strong = document.createElement("strong");
  strong.textContent = button.getAttribute("data-folder-name");
  picked.appendChild(strong);
});

// Caption editors (review page): a live count against the platform's limit, counted as the server counts
// (aiposter/captioners/fitting.py: cleaned text; UTF-16 units, or Threads' weights), and hashtag and
// mention limits. Over a limit: the error is shown and the approve buttons are disabled (the server
// refuses such an edit too).
function cleanCaption(text) {
  var kept = Array.from(text.replace(/\r\n?/g, "\n")).filter(function (ch) {
    return ch === "\n" || ch === "\t" || !/[\p{Cc}\p{Cs}\p{Cn}\p{Co}]/u.test(ch);
  });
  return kept.join("").trim();
}
function weightOf(ch, kind) {
  var code = ch.codePointAt(0);
  if (kind === "code_point") return 1;
  if (kind === "utf16") return code > 0xFFFF ? 2 : 1;
  if (code < 0x80 || (code < 0x10000 && /[\p{L}\p{N}\p{P}\p{Z}]/u.test(ch))) return 1;
  return new TextEncoder().encode(ch).length;
}
function checkCaption(area) {
  var text = cleanCaption(area.value), kind = area.getAttribute("data-weight");
  var length = Array.from(text).reduce(function (n, ch) { return n + weightOf(ch, kind); }, 0);
  var limit = Number(area.getAttribute("data-limit")), name = area.getAttribute("data-platform");
  var tags = (text.match(/#[\p{L}\p{N}_]/gu) || []).length, mentions = (text.match(/@[\p{L}\p{N}_]/gu) || []).length;
  var problem = "";
  if (!text) problem = name + ": the caption is empty";
  else if (length > limit) problem = name + ": the caption is " + length + " characters; the limit is " + limit;
  else if (tags > Number(area.getAttribute("data-max-hashtags"))) {
    problem = name + ": " + tags + " hashtags; the limit is " + area.getAttribute("data-max-hashtags");
  } else if (mentions > Number(area.getAttribute("data-max-mentions"))) {
    problem = name + ": " + mentions + " mentions; the limit is " + area.getAttribute("data-max-mentions");
  }
  var count = document.querySelector('[data-count-of="' + area.id + '"]');
  if (count) count.textContent = String(length);
  var error = document.querySelector('[data-error-of="' + area.id + '"]');
  if (error) { error.textContent = problem; error.hidden = !problem; }
  if (problem) area.setAttribute("aria-invalid", "true"); else area.removeAttribute("aria-invalid");
  var describedBy = area.id + "-count" + (problem ? " " + area.id + "-error" : "");
  area.setAttribute("aria-describedby", describedBy);
  return !problem;
}
function checkAllCaptions() {
  var areas = document.querySelectorAll("textarea[data-count]:not([readonly])");
  var ok = Array.from(areas).map(checkCaption).every(Boolean);
  document.querySelectorAll("[data-approve]").forEach(function (b) { b.disabled = !ok; });
}
document.addEventListener("input", function (event) {
  if (event.target.matches && event.target.matches("textarea[data-count]")) checkAllCaptions();
});
document.addEventListener("DOMContentLoaded", function () {
  if (document.querySelector("textarea[data-count]")) checkAllCaptions();
});

// Keyboard shortcuts where a page offers them ([data-shortcuts]; each control says its key in data-key):
// never while typing in a field, never with a modifier key.
document.addEventListener("keydown", function (event) {
  var scope = document.querySelector("[data-shortcuts]");
  if (!scope || event.ctrlKey || event.metaKey || event.altKey || event.isComposing) return;
  if (!/^[a-z]$/.test(event.key)) return;
  if (event.target.closest && event.target.closest("input, textarea, select, [contenteditable]")) return;
  var control = scope.querySelector('[data-key="' + event.key + '"]');
  if (!control) return;
  event.preventDefault();
  if (control.tagName === "TEXTAREA" || control.tagName === "INPUT") { control.focus(); return; }
  if (control.disabled) return;
  var question = control.getAttribute("data-confirm");
  if (question && !window.confirm(question)) return;
  control.click();
});
