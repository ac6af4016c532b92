// The approval page: shows the request, recomputes the challenge from the document it shows,
// and only then asks the passkey to sign it.
"use strict";

const approvalId = decodeURIComponent(location.pathname.split("/")[2] || "");
const base = "/approve/" + encodeURIComponent(approvalId);
let view = null;
let timer = null;

function renderEntries(entries) {
  const list = document.getElementById("entries");
  list.replaceChildren();
  for (const entry of entries) {
    const detail = el("pre", { class: "detail" }, JSON.stringify(entry.detail, null, 2));
    list.append(el("li", { class: "entry" }, el("span", { class: "text" }, entry.text), detail));
  }
}

function tick() {
  const left = Math.max(0, Math.floor(view.expires_at - Date.now() / 1000));
  document.getElementById("expires").textContent = left + " s";
  if (left === 0 && view.status === "pending") finish("This request has expired.", "error");
}

function finish(text, kind) {
  document.getElementById("approve").disabled = true;
  document.getElementById("deny").disabled = true;
  if (timer) clearInterval(timer);
  setStatus(text, kind);
}

async function load() {
  const response = await fetch(base + "/details", { credentials: "same-origin" });
  const data = await response.json();
  if (!response.ok) return finish(data.error_description || "Unknown request.", "error");
  view = data;
  document.getElementById("client").textContent = view.client_name + " (" + view.client_id + ")";
  document.getElementById("user").textContent = view.username;
  renderEntries(view.entries);
  if (view.binding_message) {
    document.getElementById("binding").hidden = false;
    document.getElementById("binding-message").textContent = view.binding_message;
  }
  document.getElementById("document").textContent = JSON.stringify(view.binding_document, null, 2);
  if (view.status !== "pending") return finish("This request is " + view.status + ".", "done");
  // The challenge must be the digest of what this page shows; otherwise the server is
  // asking the user to sign something else, and we refuse.
  const digest = await sha256B64url(jcs(view.binding_document));
  document.getElementById("challenge").textContent = digest;
  if (digest !== view.publicKey.challenge) {
    return finish("The server's challenge does not match the action shown. Not signing.", "error");
  }
  // And what the page shows must be what is signed: every entry, the binding message and the
  // client id come from the server beside the document, so compare them to the document.
  const signed = view.binding_document;
  const shown = view.entries.map((e) => jcs(e.detail));
  const bound = (signed.authorization_details || []).map(jcs);
  if (view.client_id !== signed.client_id ||
      (view.binding_message ?? null) !== (signed.binding_message ?? null) ||
      shown.length !== bound.length || shown.some((d, i) => d !== bound[i])) {
    return finish("The action shown is not the action you would sign. Not signing.", "error");
  }
  timer = setInterval(tick, 1000);
  tick();
  document.getElementById("approve").disabled = false;
  document.getElementById("deny").disabled = false;
  setStatus("Review the action, then approve with your passkey or deny.", "info");
}

async function approve() {
  document.getElementById("approve").disabled = true;
  setStatus("Waiting for your passkey…", "info");
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
    finish("Approved. Receipt " + result.receipt + ". You can close this page.", "done");
  } catch (error) {
    document.getElementById("approve").disabled = false;
    setStatus("Not approved: " + error.message, "error");
  }
}

async function deny() {
  try {
    await postJSON(base + "/deny", {});
    finish("Denied. The agent will be told.", "done");
  } catch (error) {
    setStatus("Could not deny: " + error.message, "error");
  }
}

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("approve").addEventListener("click", approve);
  document.getElementById("deny").addEventListener("click", deny);
  load().catch((error) => finish("Could not load the request: " + error.message, "error"));
});
