// Page chrome shared by the approval and enrollment pages: who is asking (the service's name
// and logo, from the server's view), and the strings applied at load.
"use strict";

function renderService(service) {
  const name = (service && service.display_name) || "";
  document.getElementById("service-name").textContent = name;
  const logo = document.getElementById("service-logo");
  if (service && service.logo_url) {
    // Decorative beside the name, which says the same; the CSP allows only this image origin.
    logo.src = service.logo_url;
    logo.hidden = false;
  }
  if (name) document.title = document.title + " · " + name;
}

document.addEventListener("DOMContentLoaded", applyStrings);
