// The approval page: shows the request, recomputes the challenge from the document it shows,
// and only then asks the passkey to sign it. Every value the page shows under an entry is read
// from the entry itself (checked against the signed document below); the server only says
// which fields come first and what they are called.
"use strict";

const approvalId = decodeURIComponent(location.pathname.split("/")[2] || "");
const base = "/approve/" + encodeURIComponent(approvalId);
const PLAN_FIELDS = ["max_uses", "not_before", "not_after"];
const COMMON_FIELDS = ["actions", "identifier", "locations", "datatypes", "privileges"];
let view = null;
let timer = null;
let clockOffset = 0; // server clock minus this device's, in seconds

// -- values in words ----------------------------------------------------------------------

function isMoney(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value) && "amount" in value && "currency" in value;
}

function isObject(value) {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

function words(value, key) {
  if (isMoney(value)) return String(value.amount) + " " + String(value.currency);
  if (Array.isArray(value)) return value.map((v) => words(v)).join(", ");
  if (isObject(value)) return Object.entries(value).map(([k, v]) => k + ": " + words(v, k)).join("; ");
  const text = String(value);
  // An IBAN in groups of four, as banks print it, so it can be compared at a glance.
  if (key && key.toLowerCase() === "iban") return text.replace(/(.{4})(?=.)/g, "$1 ");
  return text;
}

function at(entry, path) {
  let value = entry;
  for (const part of path) {
    if (!isObject(value) || !Object.prototype.hasOwnProperty.call(value, part)) return undefined;
    value = value[part];
  }
  return value;
}

function when(epoch) {
  // In the user's own time zone, named (dateStyle cannot be combined with timeZoneName).
  return new Intl.DateTimeFormat(LANG, {
    year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", timeZoneName: "short",
  }).format(new Date(epoch * 1000));
}

// The rows of one entry's table: the server's fields first (critical ones emphasised), then
// every other field of the entry by its name, so nothing signed is left out; then what the
// entry does not limit, and its plan terms.
function rowsFor(entry) {
  const detail = entry.detail || {};
  const rows = [];
  const covered = new Set();
  for (const field of Array.isArray(entry.fields) ? entry.fields : []) {
    const path = Array.isArray(field.path) ? field.path.map(String) : [];
    const value = at(detail, path);
    const key = path.join("\u0000");
    if (value === undefined || covered.has(key)) continue;
    covered.add(key);
    const label = field.label || (path.length === 1 && COMMON_FIELDS.includes(path[0]) ? t("field." + path[0]) : path.join(" › "));
    rows.push({ label, value: words(value, path[path.length - 1]), critical: field.critical === true });
  }
  const under = (path) => {
    for (let i = 1; i <= path.length; i++) if (covered.has(path.slice(0, i).join("\u0000"))) return true;
    return false;
  };
  const rest = (path, value) => {
    if (under(path)) return;
    if (isObject(value) && !isMoney(value) && Object.keys(value).length > 0) {
      for (const [k, v] of Object.entries(value)) rest([...path, k], v);
      return;
    }
    const label = path.length === 1 && COMMON_FIELDS.includes(path[0]) ? t("field." + path[0]) : path.join(" › ");
    rows.push({ label, value: words(value, path[path.length - 1]), critical: false });
  };
  for (const [k, v] of Object.entries(detail)) {
    if (k !== "type" && !PLAN_FIELDS.includes(k)) rest([k], v);
  }
  if (!("locations" in detail)) rows.push({ label: t("field.locations"), value: t("approve.any_location"), warn: true });
  if (!("identifier" in detail)) rows.push({ label: t("field.identifier"), value: t("approve.any_resource"), warn: true });
  return rows;
}

function planRows(detail, isPlan) {
  const rows = [];
  if (Number.isInteger(detail.max_uses)) {
    rows.push({ label: t("approve.uses"), value: detail.max_uses === 1 ? t("approve.uses_once") : t("approve.uses_many", { n: detail.max_uses }) });
  } else if (isPlan) {
    rows.push({ label: t("approve.uses"), value: t("approve.uses_default") });
  }
  const start = Number.isInteger(detail.not_before) ? when(detail.not_before) : null;
  const end = Number.isInteger(detail.not_after) ? when(detail.not_after) : null;
  if (start && end) rows.push({ label: t("approve.window"), value: t("approve.window_between", { start, end }) });
  else if (start) rows.push({ label: t("approve.window"), value: t("approve.window_from", { start }) });
  else if (end) rows.push({ label: t("approve.window"), value: t("approve.window_until", { end }) });
  return rows;
}

// -- rendering ------------------------------------------------------------------------------

function renderWho() {
  const client = el("strong", { id: "client" }, view.client_name || view.client_id);
  const clientNode = el("span", {}, client);
  if (view.client_name && view.client_name !== view.client_id) {
    clientNode.append(" ", el("span", { class: "muted" }, "(" + t("approve.client_id", { id: view.client_id }) + ")"));
  }
  const display = view.display_name || view.username;
  const userNode = el("span", {}, el("strong", { id: "user" }, display));
  if (display !== view.username) userNode.append(" ", el("span", { class: "muted" }, "(" + view.username + ")"));
  document.getElementById("who").replaceChildren(...tNodes("approve.asks", { client: clientNode, user: userNode }));
}

function renderEntries(entries) {
  const list = document.getElementById("entries");
  list.replaceChildren();
  // Several entries are a plan, carried out step by step; one entry's own use count and
  // window are said in its table all the same.
  const isPlan = entries.length > 1;
  list.classList.toggle("plan", isPlan);
  if (isPlan) {
    document.getElementById("entries-heading").textContent = t("approve.plan_heading", { n: entries.length });
  }
  entries.forEach((entry, index) => {
    const detail = entry.detail || {};
    const item = el("li", { class: "entry" });
    if (isPlan) item.append(el("p", { class: "step" }, t("approve.step", { n: index + 1 })));
    item.append(el("h3", { class: "text" }, entry.summary || entry.text || ""));
    const actions = Array.isArray(detail.actions) ? detail.actions : [];
    const destructive = (Array.isArray(entry.destructive) ? entry.destructive : []).filter((a) => actions.includes(a));
    const badges = el("p", { class: "badges" });
    if (destructive.length) {
      item.classList.add("destructive");
      badges.append(el("span", { class: "badge danger" }, t("approve.destructive", { actions: destructive.join(", ") })),
        " ", el("span", { class: "muted" }, t("approve.destructive_hint")));
    }
    const rows = rowsFor(entry);
    // The badge is for a token usable at any service (no `locations`). A missing identifier is
    // marked on its own row only: some types (a payment) name what they act on in other
    // fields, and a badge on every one of them would teach users to skip badges.
    if (!("locations" in detail)) {
      item.classList.add("unrestricted");
      badges.append(" ", el("span", { class: "badge warn" }, t("approve.unrestricted")));
    }
    if (badges.childNodes.length) item.append(badges);
    const table = el("table", { class: "fields" });
    for (const row of [...rows, ...planRows(detail, isPlan)]) {
      const tr = el("tr", {}, el("th", { scope: "row" }, row.label), el("td", { dir: "auto" }, row.value));
      if (row.critical) tr.classList.add("critical");
      if (row.warn) tr.classList.add("warn");
      table.append(tr);
    }
    item.append(table);
    list.append(item);
  });
  document.getElementById("raw").textContent = JSON.stringify(entries.map((e) => e.detail), null, 2);
}

function tick() {
  const now = Date.now() / 1000 + clockOffset;
  const left = Math.max(0, Math.floor(view.expires_at - now));
  const minutes = Math.floor(left / 60);
  const seconds = String(left % 60).padStart(2, "0");
  document.getElementById("expires").textContent = t("approve.time_left", { time: minutes + ":" + seconds });
  if (left === 0 && view.status === "pending") finish(t("approve.expired"), "error", t("approve.time_up"));
}

// The decision (or its impossibility) is final: buttons off, countdown stopped.
function finish(text, kind, expiry) {
  document.getElementById("approve").disabled = true;
  document.getElementById("deny").disabled = true;
  if (timer) clearInterval(timer);
  timer = null;
  const expires = document.getElementById("expires");
  expires.textContent = expiry || "";
  document.getElementById("expiry").hidden = !expiry;
  setStatus(text, kind);
}

// The button just pressed is now disabled: keep the keyboard's place on the outcome.
function focusStatus() {
  document.getElementById("status").focus();
}

async function load() {
  const response = await fetch(base + "/details", { credentials: "same-origin" });
  const data = await response.json();
  if (!response.ok) return finish(data.error_description || t("approve.unknown"), "error");
  view = data;
  if (typeof view.server_time === "number") clockOffset = view.server_time - Date.now() / 1000;
  renderService(view.service);
  document.getElementById("request").hidden = false;
  document.getElementById("technical").hidden = false;
  renderWho();
  renderEntries(view.entries || []);
  if (view.binding_message) {
    document.getElementById("binding").hidden = false;
    document.getElementById("binding-message").textContent = view.binding_message;
  } else {
    document.getElementById("no-binding").hidden = false;
  }
  document.getElementById("document").textContent = JSON.stringify(view.binding_document, null, 2);
  if (view.status !== "pending") {
    const kinds = { approved: "done", denied: "denied", expired: "error" };
    const known = view.status in kinds;
    return finish(t(known ? "approve.already." + view.status : "approve.already.other", { status: view.status }), kinds[view.status] || "info");
  }
  // The challenge must be the digest of what this page shows; otherwise the server is
  // asking the user to sign something else, and we refuse.
  const digest = await sha256B64url(jcs(view.binding_document));
  document.getElementById("challenge").textContent = digest;
  if (digest !== view.publicKey.challenge) return finish(t("approve.mismatch_challenge"), "error");
  // And what the page shows must be what is signed: every entry, the binding message and the
  // client id come from the server beside the document, so compare them to the document.
  const signed = view.binding_document;
  const shown = view.entries.map((e) => jcs(e.detail));
  const bound = (signed.authorization_details || []).map(jcs);
  if (view.client_id !== signed.client_id ||
      (view.binding_message ?? null) !== (signed.binding_message ?? null) ||
      shown.length !== bound.length || shown.some((d, i) => d !== bound[i])) {
    return finish(t("approve.mismatch_shown"), "error");
  }
  timer = setInterval(tick, 1000);
  document.getElementById("expiry").hidden = false;
  tick();
  document.getElementById("approve").disabled = false;
  document.getElementById("deny").disabled = false;
  setStatus(t("approve.ready"), "info");
}

async function approve() {
  document.getElementById("approve").disabled = true;
  document.getElementById("deny").disabled = true;
  setStatus(t("approve.waiting"), "info");
  const options = view.publicKey;
  try {
    const credential = await navigator.credentials.get({
      publicKey: {
        challenge: b64urlToBytes(options.challenge),
        rpId: options.rpId,
        timeout: options.timeout,
        userVerification: "required",
        allowCredentials: (options.allowCredentials || []).map((c) => ({
          type: "public-key", id: b64urlToBytes(c.id), transports: c.transports,
        })),
      },
    });
    const result = await postJSON(base + "/approve", { credential: credentialToJSON(credential) });
    finish(t("approve.approved", { receipt: result.receipt }), "done");
    focusStatus();
  } catch (error) {
    if (timer) {
      document.getElementById("approve").disabled = false;
      document.getElementById("deny").disabled = false;
    }
    setStatus(t("approve.not_approved", { reason: error.message }), "error");
  }
}

async function deny() {
  try {
    await postJSON(base + "/deny", {});
    finish(t("approve.denied"), "denied");
    focusStatus();
  } catch (error) {
    setStatus(t("approve.could_not_deny", { reason: error.message }), "error");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("approve").addEventListener("click", approve);
  document.getElementById("deny").addEventListener("click", deny);
  load().catch((error) => finish(t("approve.could_not_load", { reason: error.message }), "error"));
});
