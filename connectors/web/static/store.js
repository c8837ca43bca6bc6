// Offline copies of conversations in IndexedDB, so they stay readable with the server down.
// Keys are scoped by client id: two browsers never share a database anyway, but a token or
// client change must not show another identity's chats.

const DB_NAME = "relaybot";
const VERSION = 1;
let opening = null;

function open() {
  if (!("indexedDB" in self)) return Promise.resolve(null);
  if (!opening) {
    opening = new Promise((resolve) => {
      const req = indexedDB.open(DB_NAME, VERSION);
      req.onupgradeneeded = () => req.result.createObjectStore("kv");
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => resolve(null); // private mode etc.: work without a cache
    });
  }
  return opening;
}

async function run(mode, fn) {
  const db = await open();
  if (!db) return undefined;
  return new Promise((resolve) => {
    const tx = db.transaction("kv", mode);
    const req = fn(tx.objectStore("kv"));
    tx.oncomplete = () => resolve(req ? req.result : undefined);
    tx.onerror = tx.onabort = () => resolve(undefined);
  });
}

export const cache = {
  /** Save the conversation list of `client`. */
  saveList: (client, list) => run("readwrite", (s) => s.put(list, `${client}:list`)),
  /** The saved conversation list (or undefined). */
  loadList: (client) => run("readonly", (s) => s.get(`${client}:list`)),
  /** Save the loaded messages of a conversation. */
  saveMessages: (client, cid, messages) => run("readwrite", (s) => s.put(messages, `${client}:conv:${cid}`)),
  /** The saved messages of a conversation (or undefined). */
  loadMessages: (client, cid) => run("readonly", (s) => s.get(`${client}:conv:${cid}`)),
  /** Forget a deleted conversation. */
  drop: (client, cid) => run("readwrite", (s) => s.delete(`${client}:conv:${cid}`)),
};
