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
