"use strict";

const enrollToken = decodeURIComponent(location.pathname.split("/")[2] || "");
const enrollBase = "/enroll/" + encodeURIComponent(enrollToken);

async function register() {
  const button = document.getElementById("register");
  button.disabled = true;
  setStatus(t("enroll.waiting"), "info");
  try {
    const o = await postJSON(enrollBase + "/options", {});
    const credential = await navigator.credentials.create({
      publicKey: {
        challenge: b64urlToBytes(o.challenge),
        rp: o.rp,
        user: { id: b64urlToBytes(o.user.id), name: o.user.name, displayName: o.user.displayName },
        pubKeyCredParams: o.pubKeyCredParams,
        timeout: o.timeout,
        attestation: o.attestation,
        authenticatorSelection: o.authenticatorSelection,
        excludeCredentials: (o.excludeCredentials || []).map((c) => ({ type: "public-key", id: b64urlToBytes(c.id) })),
      },
    });
    await postJSON(enrollBase + "/complete", { credential: credentialToJSON(credential) });
    setStatus(t("enroll.done"), "done");
  } catch (error) {
    button.disabled = false;
    setStatus(t("enroll.failed", { reason: error.message }), "error");
  }
}

// The user by display name; the user name beside it only when it says something more.
function renderUser(data) {
  const display = data.display_name || data.username;
  const user = el("span", {}, el("strong", { id: "user" }, display));
  if (display !== data.username) {
    user.append(" ", el("span", { class: "muted", id: "username" }, "(" + t("enroll.username", { username: data.username }) + ")"));
  }
  document.getElementById("for").replaceChildren(...tNodes("enroll.for", { user }));
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("register").addEventListener("click", register);
  try {
    const response = await fetch(enrollBase + "/details", { credentials: "same-origin" });
    const data = await response.json();
    if (!response.ok) return setStatus(data.error_description || t("enroll.unknown"), "error");
    renderService(data.service);
    renderUser(data);
    document.getElementById("register").disabled = false;
    setStatus(t("enroll.ready"), "info");
  } catch (error) {
    setStatus(t("enroll.failed", { reason: error.message }), "error");
  }
});
