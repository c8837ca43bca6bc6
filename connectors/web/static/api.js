// Talking to the server: identity (client id + optional token), JSON calls, uploads with
// progress, and the event stream with resume.

const CLIENT_KEY = "relaybot.client";
const TOKEN_KEY = "relaybot.token";

function newClientId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** This browser's client id (kept in localStorage) and token (from ?token= or localStorage). */
export function identity() {
  let client = localStorage.getItem(CLIENT_KEY);
  if (!client || !/^[A-Za-z0-9_-]{16,64}$/.test(client)) {
    client = newClientId();
    localStorage.setItem(CLIENT_KEY, client);
  }
  const params = new URLSearchParams(location.search);
  let token = params.get("token");
  if (token) {
    localStorage.setItem(TOKEN_KEY, token);
    params.delete("token"); // keep the secret out of the address bar and history
    history.replaceState(null, "", location.pathname + (params.toString() ? `?${params}` : ""));
  } else {
    token = localStorage.getItem(TOKEN_KEY);
  }
  if (token) {
    // lets <img src="/media/…"> and downloads through; SameSite=Strict: no cross-site use
    document.cookie = `relaybot_token=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
  }
  return { client, token };
}

export function setToken(token) {
  localStorage.setItem(TOKEN_KEY, token);
  document.cookie = `relaybot_token=${encodeURIComponent(token)}; path=/; SameSite=Strict`;
}

/** An error answer of the server: `status` and the server's message. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** An error meaning the server could not be reached at all. */
export class OfflineError extends Error {}

export function makeApi(id) {
  const headers = (extra = {}) => {
    const h = { "X-Relaybot-Client": id.client, ...extra };
    if (id.token) h.Authorization = `Bearer ${id.token}`;
    return h;
  };

  async function call(method, path, body) {
    let res;
    try {
      res = await fetch(path, {
        method,
        headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }),
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch (err) {
      throw new OfflineError(String(err));
    }
    let data = null;
    try { data = await res.json(); } catch (_) { /* not JSON */ }
    if (!res.ok) throw new ApiError(res.status, (data && data.error) || `HTTP ${res.status}`);
    return data;
  }

  /** Upload a Blob with progress callbacks; resolves to the server's media reference. */
  function upload(blob, name, onProgress) {
    return new Promise((resolve, reject) => {
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/api/uploads");
      for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
      xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
      xhr.onload = () => {
        let data = null;
        try { data = JSON.parse(xhr.responseText); } catch (_) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) resolve(data);
        else reject(new ApiError(xhr.status, (data && data.error) || `upload failed (HTTP ${xhr.status})`));
      };
      xhr.onerror = () => reject(new OfflineError("upload failed: the server cannot be reached"));
      const form = new FormData();
      form.append("file", blob, name);
      xhr.send(form);
    });
  }

  /**
   * Open the event stream; `onEvent(name, data)` gets every event, `onState(online)` changes of
   * connectivity. EventSource reconnects by itself and sends Last-Event-ID; if the browser gives
   * up (an HTTP error), we reconnect ourselves with the last id we saw.
   */
  function events(names, onEvent, onState) {
    let source = null;
    let lastId = "";
    let retry = null;
    const open = () => {
      const q = new URLSearchParams({ client: id.client });
      if (id.token) q.set("token", id.token);
      if (lastId) q.set("last_event_id", lastId);
      source = new EventSource(`/api/events?${q}`);
      source.onopen = () => onState(true);
      source.onerror = () => {
        onState(false);
        if (source.readyState === EventSource.CLOSED) {
          clearTimeout(retry);
          retry = setTimeout(open, 2000);
        }
      };
      for (const name of names) {
        source.addEventListener(name, (e) => {
          if (e.lastEventId) lastId = e.lastEventId;
          let data = {};
          try { data = JSON.parse(e.data); } catch (_) { return; }
          onEvent(name, data);
        });
      }
    };
    open();
    return { close: () => { clearTimeout(retry); if (source) source.close(); } };
  }

  return { call, upload, events, headers };
}
