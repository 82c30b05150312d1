// tailorml: this browser receives the signed-in person's alerts as notifications (Web Push).
//
// A same-origin file: the pages' Content-Security-Policy allows scripts from this server
// only, never inline ones. The page's #push section carries the VAPID public key
// (data-key) and the page's form token (data-csrf); the subscription is posted to
// POST /push/subscribe with that token and the page's session cookie, as the page's forms
// are (the API itself takes a token, never the cookie). The service worker that shows the
// notifications is /push-sw.js. Without a Push API, or with notifications blocked, the page
// says so and nothing else changes: the alerts stay on the page and in the person's app.
(function () {
  "use strict";

  var box = document.getElementById("push");
  if (!box) {
    return;
  }
  var status = document.getElementById("push-status");
  var start = document.getElementById("push-subscribe");
  var stop = document.getElementById("push-stop");
  var registration = null;

  var KEPT = " Your alerts are still on this page and in your app.";
  var DENIED =
    "Notifications are blocked for this site in this browser: allow them in the browser's " +
    "site settings, then press the button again." + KEPT;

  function say(state, text) {
    box.setAttribute("data-state", state);
    status.textContent = text;
    status.className = ["failed", "denied", "unsupported"].indexOf(state) >= 0 ? "problem" : "notice";
  }

  function buttons(subscribed) {
    start.hidden = subscribed;
    stop.hidden = !subscribed;
  }

  // base64url (as GET /api/v1/push/subscriptions gives the key) -> bytes
  function applicationServerKey(text) {
    var base64 = (text + "===".slice((text.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/");
    var raw = window.atob(base64);
    var bytes = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i += 1) {
      bytes[i] = raw.charCodeAt(i);
    }
    return bytes;
  }

  function post(path, fields) {
    var body = new URLSearchParams(fields);
    body.set("csrf", box.getAttribute("data-csrf") || "");
    return fetch(path, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      redirect: "manual",
      headers: { Accept: "application/json" },
    }).then(function (answer) {
      if (answer.type === "opaqueredirect") {
        throw new Error("your session ended; sign in again");
      }
      if (!answer.ok) {
        return answer.text().then(function (text) {
          var message = text;
          try {
            message = JSON.parse(text).message || text;
          } catch (ignored) {
            // a plain-text answer (an expired form token)
          }
          throw new Error(message || "the server answered " + answer.status);
        });
      }
      return answer.json();
    });
  }

  async function subscribe() {
    start.disabled = true;
    try {
      var permission = await Notification.requestPermission();
      if (permission !== "granted") {
        say("denied", DENIED);
        return;
      }
      var subscription;
      try {
        subscription = await registration.pushManager.subscribe({
          userVisibleOnly: true,
          applicationServerKey: applicationServerKey(box.getAttribute("data-key")),
        });
      } catch (error) {
        say(
          "failed",
          "This browser could not subscribe to its push service (" + error.name + ": " +
            error.message + "), so it cannot show alerts while this page is closed." + KEPT
        );
        return;
      }
      try {
        await post("/push/subscribe", { subscription: JSON.stringify(subscription.toJSON()) });
      } catch (error) {
        await subscription.unsubscribe().catch(function () {});
        say("failed", "The server did not keep this browser's subscription: " + error.message + "." + KEPT);
        return;
      }
      say("subscribed", "This browser shows your alerts as notifications, even when this page is closed.");
      buttons(true);
    } finally {
      start.disabled = false;
    }
  }

  async function unsubscribe() {
    stop.disabled = true;
    try {
      var subscription = await registration.pushManager.getSubscription();
      if (subscription) {
        var endpoint = subscription.endpoint;
        await subscription.unsubscribe();
        try {
          await post("/push/unsubscribe", { endpoint: endpoint });
        } catch (error) {
          say(
            "stopped",
            "This browser stopped its subscription; the server will forget it at the next alert (" +
              error.message + ")."
          );
          buttons(false);
          return;
        }
      }
      say("stopped", "This browser no longer shows your alerts.");
      buttons(false);
    } finally {
      stop.disabled = false;
    }
  }

  async function main() {
    if (!("serviceWorker" in navigator) || !("PushManager" in window) || !("Notification" in window)) {
      say(
        "unsupported",
        "This browser cannot show alerts while this page is closed: it has no Push API here " +
          "(an old browser, a private window, or a page not served over HTTPS)." + KEPT
      );
      return;
    }
    try {
      registration = await navigator.serviceWorker.register("/push-sw.js", { scope: "/" });
      await navigator.serviceWorker.ready;
    } catch (error) {
      say("unsupported", "This browser refused the alert worker (" + error.message + ")." + KEPT);
      return;
    }
    start.addEventListener("click", subscribe);
    stop.addEventListener("click", unsubscribe);
    var existing = await registration.pushManager.getSubscription();
    if (existing && Notification.permission === "granted") {
      say("subscribed", "This browser shows your alerts as notifications, even when this page is closed.");
      buttons(true);
    } else if (Notification.permission === "denied") {
      say("denied", DENIED);
      buttons(false);
    } else {
      say("ready", "This browser can show your alerts as notifications, even when this page is closed.");
      buttons(false);
    }
  }

  main();
})();
