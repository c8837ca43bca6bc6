// Service worker: keeps the app shell available offline. The shell is fetched from the
// network first (so an upgraded server is picked up at once) and from the cache when the server
// cannot be reached. API calls and images are never cached here: the page keeps conversations
// in IndexedDB itself, per client.

const CACHE = "relaybot-shell-v1";
const SHELL = ["/", "/static/app.js", "/static/markdown.js", "/static/store.js", "/static/api.js",
               "/static/view.js", "/static/upload.js", "/static/costs.js",
               "/static/style.css", "/manifest.webmanifest"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const key of await caches.keys()) if (key !== CACHE) await caches.delete(key);
    await self.clients.claim();
  })());
});

self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== location.origin) return;
  const path = url.pathname === "/index.html" ? "/" : url.pathname;
  if (!SHELL.includes(path)) return;
  event.respondWith((async () => {
    try {
      const fresh = await fetch(event.request);
      if (fresh.ok) (await caches.open(CACHE)).put(path, fresh.clone());
      return fresh;
    } catch (err) {
      const cached = await caches.match(path);
      if (cached) return cached;
      throw err;
    }
  })());
});
