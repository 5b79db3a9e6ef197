// Keeps the app's shell for when the phone has no network (underground, in a lift): the pages
// and libraries come from the network when it answers, else from this cache. Calls to the API
// are never cached: what is shown offline (the payment code, the ride code) is computed on the
// phone from keys kept in IndexedDB.
"use strict";

const SHELL = "citypay-shell-v1";
const FILES = [
  "/app/",
  "/app/app.js",
  "/app/manifest.webmanifest",
  "/app/icon.svg",
  "/pages/common.js",
  "/pages/pages.css",
  "/pages/vendor/qrcode.js",
  "/pages/vendor/JsBarcode.code128.min.js",
  "/pages/vendor/jsQR.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((name) => name !== SHELL).map((name) => caches.delete(name))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin || !FILES.includes(url.pathname)) return;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(SHELL).then((cache) => cache.put(url.pathname, copy));
        }
        return response;
      })
      .catch(() => caches.match(url.pathname).then((cached) => cached || Response.error())),
  );
});
