// Every word the approval and enrollment pages say, in one place: translate by adding a
// language beside "en" (the page picks the browser's language, else English). Words that
// describe an entry's own fields (its sentence, a type's labels) come from the service's type
// registry instead; see README, "Configuration".
"use strict";

const STRINGS = {
  en: {
    "approve.title": "Approve an agent's action",
    "approve.asks": "{client} asks you to approve this as {user}.",
    "approve.client_id": "agent id {id}",
    "approve.code_heading": "Check this code matches your agent",
    "approve.code_hint": "Your agent shows this code too. If it is different, deny.",
    "approve.no_code": "The agent sent no code to compare: make sure you started this request.",
    "approve.entries_heading": "What the agent will be allowed to do",
    "approve.plan_heading": "The plan: {n} steps, approved together",
    "approve.step": "Step {n}",
    "approve.time_left": "Time left to decide: {time}",
    "approve.time_up": "Time is up.",
    "approve.approve": "Approve with passkey",
    "approve.deny": "Deny",
    "approve.loading": "Loading…",
    "approve.ready": "Review the action, then approve with your passkey or deny.",
    "approve.waiting": "Waiting for your passkey…",
    "approve.approved": "Approved. Receipt {receipt}. You can close this page.",
    "approve.denied": "Denied. The agent will be told. You can close this page.",
    "approve.not_approved": "Not approved: {reason}",
    "approve.could_not_deny": "Could not deny: {reason}",
    "approve.could_not_load": "Could not load the request: {reason}",
    "approve.unknown": "Unknown request.",
    "approve.expired": "This request has expired.",
    "approve.already.approved": "This request is approved.",
    "approve.already.denied": "This request is denied.",
    "approve.already.expired": "This request has expired.",
    "approve.already.other": "This request is {status}.",
    "approve.mismatch_challenge": "The server's challenge does not match the action shown. Not signing.",
    "approve.mismatch_shown": "The action shown is not the action you would sign. Not signing.",
    "approve.destructive": "Destructive: {actions}",
    "approve.destructive_hint": "This cannot be undone.",
    "approve.unrestricted": "Not limited",
    "approve.any_location": "Any location: not limited to one service",
    "approve.any_resource": "Any resource: not limited to one item",
    "approve.uses": "Uses",
    "approve.uses_once": "once",
    "approve.uses_many": "up to {n} times",
    "approve.uses_default": "once, unless the service that carries it out allows more",
    "approve.window": "When",
    "approve.window_between": "between {start} and {end}",
    "approve.window_from": "not before {start}",
    "approve.window_until": "not after {end}",
    "approve.technical": "Technical details",
    "approve.technical_entries": "The request, as the agent sent it",
    "approve.technical_document": "What your passkey signs",
    "approve.technical_explain":
      "Your passkey signs SHA-256 of this document in RFC 8785 canonical form. This page recomputed it and checked it against the server's challenge:",
    "field.actions": "Action",
    "field.identifier": "Resource",
    "field.locations": "Where",
    "field.datatypes": "Data",
    "field.privileges": "Privileges",
    "field.other": "Also",
    "enroll.title": "Register a passkey",
    "enroll.for": "This passkey lets you approve what AI agents ask to do as {user}.",
    "enroll.username": "user name {username}",
    "enroll.device": "Your device will ask for your PIN, fingerprint or face.",
    "enroll.create": "Create passkey",
    "enroll.loading": "Loading…",
    "enroll.ready": "Ready.",
    "enroll.waiting": "Waiting for your authenticator…",
    "enroll.done": "Passkey registered. You can close this page.",
    "enroll.failed": "Registration failed: {reason}",
    "enroll.unknown": "Unknown link.",
  },
};

const LANG = (navigator.languages || [navigator.language || "en"])
  .map((tag) => String(tag).toLowerCase().split("-")[0])
  .find((tag) => Object.prototype.hasOwnProperty.call(STRINGS, tag)) || "en";

// The text for `key` with {name} placeholders filled from `vars` (as text, never as HTML).
function t(key, vars) {
  const text = STRINGS[LANG][key] ?? STRINGS.en[key] ?? key;
  return text.replace(/\{(\w+)\}/g, (whole, name) => (vars && name in vars ? String(vars[name]) : whole));
}

// The same, with placeholders filled by DOM nodes (for <strong> names inside a sentence).
function tNodes(key, nodes) {
  const text = STRINGS[LANG][key] ?? STRINGS.en[key] ?? key;
  const out = [];
  let last = 0;
  for (const match of text.matchAll(/\{(\w+)\}/g)) {
    out.push(text.slice(last, match.index));
    const node = nodes[match[1]];
    out.push(node instanceof Node ? node : String(node ?? match[0]));
    last = match.index + match[0].length;
  }
  out.push(text.slice(last));
  return out;
}

// Fill every element marked data-i18n="key" with its text, and set the document's language.
function applyStrings() {
  document.documentElement.lang = LANG;
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  const title = document.querySelector("title[data-i18n]");
  if (title) document.title = t(title.dataset.i18n);
}
