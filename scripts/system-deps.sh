#!/usr/bin/env bash
# The system packages the tests use: Debian's chromium (browser tests, never `playwright
# install`), redis-server (Redis store and replay tests) and unzip (the Keycloak distribution).
# Installed with apt-get when missing and we are root; otherwise one line says what to run.
set -euo pipefail

need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v unzip >/dev/null 2>&1 || need+=(unzip)
[ ${#need[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: run 'sudo apt-get update && sudo apt-get install -y ${need[*]}' and retry" >&2
  exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "missing system packages (${need[*]}) and no apt-get here: install them with your package manager" >&2
  exit 1
fi
echo "installing ${need[*]} (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
