"use strict";

const enrollToken = decodeURIComponent(location.pathname.split("/")[2] || "");
const enrollBase = "/enroll/" + encodeURIComponent(enrollToken);

async function register() {
  const button = document.getElementById("register");
  button.disabled = true;
  setStatus("Waiting for your authenticator…", "info");
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
    setStatus("Passkey registered. You can close this page.", "done");
  } catch (error) {
    button.disabled = false;
    setStatus("Registration failed: " + error.message, "error");
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  document.getElementById("register").addEventListener("click", register);
  const response = await fetch(enrollBase + "/details", { credentials: "same-origin" });
  const data = await response.json();
  if (!response.ok) return setStatus(data.error_description || "Unknown link.", "error");
  document.getElementById("user").textContent = data.display_name + " (" + data.username + ")";
  document.getElementById("register").disabled = false;
  setStatus("Ready.", "info");
});
