// tailorml's service worker: shows a pushed alert as a notification and opens its page.
//
// The server (tailorml.service.push) sends, encrypted for this browser's subscription:
// {patient, name, title, body, url, decision: the stored decision as alerts/current shows it}.
// A click focuses a window already on that page of this server, else opens it. Served at
// /push-sw.js with Service-Worker-Allowed: / so its scope covers /me and /review.
"use strict";

// a path of this server only: a payload never sends a click to another site
function page(url) {
  return typeof url === "string" && /^\/(?![\/\\])/.test(url) ? url : "/me";
}

self.addEventListener("install", function () {
  self.skipWaiting();
});

self.addEventListener("activate", function (event) {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("push", function (event) {
  var message = {};
  try {
    message = event.data ? event.data.json() : {};
  } catch (error) {
    message = {};
  }
  var decision = message.decision || {};
  var title = message.title || "tailorml alert";
  event.waitUntil(
    self.registration.showNotification(title, {
      body: message.body || "Open tailorml to see the reading.",
      tag: "tailorml-" + (message.patient || "alert"),
      renotify: true,
      requireInteraction: decision.decision === "urgent",
      timestamp: decision.reading_ms || Date.now(),
      data: { url: page(message.url) },
    })
  );
});

self.addEventListener("notificationclick", function (event) {
  event.notification.close();
  var target = new URL(page((event.notification.data || {}).url), self.location.origin).href;
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then(function (windows) {
      for (var i = 0; i < windows.length; i += 1) {
        if (windows[i].url === target && "focus" in windows[i]) {
          return windows[i].focus();
        }
      }
      return self.clients.openWindow(target);
    })
  );
});
