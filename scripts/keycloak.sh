#!/usr/bin/env bash
# Local Keycloak for ciba_service "keycloak mode" -- DEVELOPMENT AND TESTS ONLY.
#
#   scripts/keycloak.sh fetch             download + verify + unzip the pinned Keycloak (cached)
#   scripts/keycloak.sh build-extension   build keycloak-config/ (with its unit tests), install the jar
#   scripts/keycloak.sh start             fresh start-dev with realm-export/ imported; waits until ready
#   scripts/keycloak.sh stop              SIGTERM, wait, SIGKILL if needed
#   scripts/keycloak.sh status            exit 0 running+ready, 1 running not ready, 3 not running
#   scripts/keycloak.sh wait              wait until ready (KEYCLOAK_WAIT_TIMEOUT seconds, default 300)
#
# Environment (all optional):
#   CIBA_CACHE_DIR     cache root (default ~/.cache/ciba-service); Keycloak lives in
#                      $CIBA_CACHE_DIR/keycloak-26.7.3/ with keycloak.pid and keycloak.log
#   KC_HTTP_PORT       HTTP port (default 8180), bound to 127.0.0.1; issuer http://localhost:PORT
#   KC_HTTP_MANAGEMENT_PORT management port for /health (default 9000)
#   CIBA_CHANNEL_URI   CIBA HTTP authentication channel (default
#                      http://localhost:8000/keycloak/auth-channel)
#   CIBA_SPIFFE_BUNDLE_URI JWKS bundle endpoint of the SPIFFE trust domain example.test, fetched
#                      by Keycloak over HTTP(S) (default: CIBA_CHANNEL_URI's origin +
#                      /spiffe/bundle, where keycloak_smoke.py's stub serves it); put into the
#                      realm import as ${CIBA_SPIFFE_BUNDLE_URI}
#   KEYCLOAK_JAVA_HOME a Java >= 25 home (KC_JAVA_HOME is accepted too; default: JAVA_HOME if it
#                      is >= 25, else /usr/lib/jvm/temurin-25*, /usr/lib/jvm/*-25-*)
#   KEYCLOAK_WAIT_TIMEOUT seconds to wait for readiness (default 300)
#
# The admin account is a DEV-ONLY bootstrap admin (admin/admin) in the master realm.
set -euo pipefail

KC_VERSION=26.7.3
KC_ARTIFACT="org.keycloak:keycloak-quarkus-dist:${KC_VERSION}:zip"
# SHA-256 of keycloak-quarkus-dist-26.7.3.zip as served by Maven Central (176,710,367 bytes).
# Maven itself checks the repository's .sha1 (-C, strict checksums); this pins the exact bytes.
KC_ZIP_SHA256=27a6535553c3cdcd083872ba40629efafb3475e3b758e0c6f691395561dd0f1f
# maven-dependency-plugin pinned so `fetch` does not depend on Maven's default plugin version.
DEP_PLUGIN=org.apache.maven.plugins:maven-dependency-plugin:3.8.1

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE_ROOT="${CIBA_CACHE_DIR:-$HOME/.cache/ciba-service}"
CACHE_DIR="${CACHE_ROOT}/keycloak-${KC_VERSION}"
ZIP_FILE="${CACHE_DIR}/keycloak-quarkus-dist-${KC_VERSION}.zip"
DIST_DIR="${CACHE_DIR}/keycloak-${KC_VERSION}"
DIST_MARKER="${DIST_DIR}/.ciba-verified-sha256"
PID_FILE="${CACHE_DIR}/keycloak.pid"
LOG_FILE="${CACHE_DIR}/keycloak.log"

HTTP_PORT="${KC_HTTP_PORT:-8180}"
MGMT_PORT="${KC_HTTP_MANAGEMENT_PORT:-9000}"
CHANNEL_URI="${CIBA_CHANNEL_URI:-http://localhost:8000/keycloak/auth-channel}"
# scheme://host[:port] of the channel URI (the smoke test's stub serves the bundle there too).
CHANNEL_ORIGIN="$(printf '%s' "$CHANNEL_URI" | sed -E 's#^([A-Za-z][A-Za-z0-9+.-]*://[^/?#]+).*#\1#')"
SPIFFE_BUNDLE_URI="${CIBA_SPIFFE_BUNDLE_URI:-${CHANNEL_ORIGIN}/spiffe/bundle}"
WAIT_TIMEOUT="${KEYCLOAK_WAIT_TIMEOUT:-300}"
REALM=agents
PUBLIC_URL="http://localhost:${HTTP_PORT}"
READY_URL="http://127.0.0.1:${MGMT_PORT}/health/ready"
REALM_URL="http://127.0.0.1:${HTTP_PORT}/realms/${REALM}/.well-known/openid-configuration"

EXT_POM="${REPO_ROOT}/keycloak-config/pom.xml"
EXT_JAR_NAME="ciba-session-note-mapper.jar"
EXT_JAR="${REPO_ROOT}/keycloak-config/target/${EXT_JAR_NAME}"
KC_CONF="${REPO_ROOT}/keycloak-config/keycloak.conf"
REALM_DIR="${REPO_ROOT}/realm-export"

log() { printf '[keycloak.sh] %s\n' "$*" >&2; }
die() { printf '[keycloak.sh] ERROR: %s\n' "$*" >&2; exit 1; }

# Maven quietly, without the stray ANSI reset codes Debian's Maven 3.8.7 prints even with -q -B.
mvnq() { mvn -q -B "$@" 2>&1 | sed -e 's/\x1b\[[0-9;]*m//g'; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required (apt-get install $2)"; }

log_tail() {
    if [ -f "$LOG_FILE" ]; then
        printf '[keycloak.sh] ---- last 60 lines of %s ----\n' "$LOG_FILE" >&2
        tail -n 60 "$LOG_FILE" >&2 || true
        printf '[keycloak.sh] ---- end of log ----\n' >&2
    fi
}

java_major() {  # prints the major version of "$1/bin/java", or nothing
    local v
    v="$("$1/bin/java" -version 2>&1 | sed -n 's/.*version "\([0-9][0-9]*\).*/\1/p' | head -n1)" || true
    printf '%s' "$v"
}

find_java_home() {
    local cand m
    for cand in "${KEYCLOAK_JAVA_HOME:-}" "${KC_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/temurin-25* /usr/lib/jvm/*-25-* /usr/lib/jvm/*-25; do
        [ -n "$cand" ] && [ -x "$cand/bin/java" ] || continue
        m="$(java_major "$cand")"
        if [ -n "$m" ] && [ "$m" -ge 25 ]; then
            printf '%s' "$cand"
            return 0
        fi
    done
    return 1
}

pid_alive() {  # prints the pid from the pid file if that process is alive
    local pid
    [ -f "$PID_FILE" ] || return 1
    pid="$(cat "$PID_FILE" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    printf '%s' "$pid"
}

is_ready() {
    curl -fsS -o /dev/null --max-time 3 "$READY_URL" 2>/dev/null &&
        curl -fsS -o /dev/null --max-time 3 "$REALM_URL" 2>/dev/null
}

# ---------------------------------------------------------------------------------------------
cmd_fetch() {
    need unzip unzip
    need sha256sum coreutils
    if [ -f "$DIST_MARKER" ] && [ "$(cat "$DIST_MARKER")" = "$KC_ZIP_SHA256" ] && [ -x "$DIST_DIR/bin/kc.sh" ]; then
        log "Keycloak ${KC_VERSION} already unpacked and verified: $DIST_DIR"
        return 0
    fi
    mkdir -p "$CACHE_DIR"
    if [ ! -f "$ZIP_FILE" ] || [ "$(sha256sum "$ZIP_FILE" | cut -d' ' -f1)" != "$KC_ZIP_SHA256" ]; then
        need mvn maven
        rm -f "$ZIP_FILE"
        log "downloading ${KC_ARTIFACT} from Maven Central (about 169 MiB) ..."
        # -C: fail on a checksum mismatch against the repository's .sha1 (Maven's default only warns).
        mvnq -C "${DEP_PLUGIN}:copy" \
            -Dartifact="$KC_ARTIFACT" -DoutputDirectory="$CACHE_DIR" -Dmdep.overWriteReleases=true \
            || die "Maven could not download ${KC_ARTIFACT}"
        [ -f "$ZIP_FILE" ] || die "Maven finished but $ZIP_FILE is missing"
    fi
    local actual
    actual="$(sha256sum "$ZIP_FILE" | cut -d' ' -f1)"
    if [ "$actual" != "$KC_ZIP_SHA256" ]; then
        rm -f "$ZIP_FILE"
        die "SHA-256 mismatch for $(basename "$ZIP_FILE"): got $actual, pinned $KC_ZIP_SHA256 (file removed)"
    fi
    log "SHA-256 verified: $KC_ZIP_SHA256"
    local tmp="${CACHE_DIR}/.unzip.$$"
    rm -rf "$tmp" "$DIST_DIR"
    mkdir -p "$tmp"
    unzip -q "$ZIP_FILE" -d "$tmp" || { rm -rf "$tmp"; die "unzip failed"; }
    [ -x "$tmp/keycloak-${KC_VERSION}/bin/kc.sh" ] || { rm -rf "$tmp"; die "unexpected zip layout"; }
    mv "$tmp/keycloak-${KC_VERSION}" "$DIST_DIR"
    rmdir "$tmp"
    printf '%s' "$KC_ZIP_SHA256" > "$DIST_MARKER"
    log "unpacked to $DIST_DIR"
}

cmd_build_extension() {
    need mvn maven
    [ -x "$DIST_DIR/bin/kc.sh" ] || cmd_fetch
    log "building keycloak-config (protocol mapper + unit tests) ..."
    mvnq -f "$EXT_POM" package || die "extension build failed (mvn -f keycloak-config/pom.xml package)"
    [ -f "$EXT_JAR" ] || die "build succeeded but $EXT_JAR is missing"
    # Report the unit-test count from Surefire's XML (mvn -q hides the summary).
    local reports="${REPO_ROOT}/keycloak-config/target/surefire-reports" tests
    tests="$(cat "$reports"/TEST-*.xml 2>/dev/null | sed -n 's/.*<testsuite [^>]*tests="\([0-9]*\)".*/\1/p' | awk '{s+=$1} END {if (NR) print s}' || true)"
    mkdir -p "$DIST_DIR/providers"
    cp "$EXT_JAR" "$DIST_DIR/providers/$EXT_JAR_NAME"
    log "mapper unit tests run: ${tests:-?} (all green); installed $DIST_DIR/providers/$EXT_JAR_NAME"
}

cmd_start() {
    need curl curl
    local pid
    if pid="$(pid_alive)"; then
        die "Keycloak is already running (pid $pid); run 'scripts/keycloak.sh stop' first"
    fi
    rm -f "$PID_FILE"
    cmd_fetch
    if [ ! -f "$DIST_DIR/providers/$EXT_JAR_NAME" ] ||
        [ -n "$(find "$REPO_ROOT/keycloak-config/pom.xml" "$REPO_ROOT/keycloak-config/src" -newer "$DIST_DIR/providers/$EXT_JAR_NAME" -type f 2>/dev/null | head -n1)" ]; then
        cmd_build_extension
    fi
    if curl -s -o /dev/null --max-time 2 "http://127.0.0.1:${HTTP_PORT}/" ||
        curl -s -o /dev/null --max-time 2 "http://127.0.0.1:${MGMT_PORT}/"; then
        die "something already listens on 127.0.0.1:${HTTP_PORT} or :${MGMT_PORT} (not our pid file)"
    fi
    local java_home
    java_home="$(find_java_home)" || die "Keycloak ${KC_VERSION} needs Java >= 25: set KEYCLOAK_JAVA_HOME (none found in JAVA_HOME or /usr/lib/jvm)"

    # Fresh state on every start: the dev database is in memory (db=dev-mem) and data/ is wiped,
    # so --import-realm always imports realm-export/ from scratch (no stale realm, no "already
    # exists, skipping").
    rm -rf "$DIST_DIR/data"
    mkdir -p "$DIST_DIR/data/import"
    cp "$REALM_DIR"/*.json "$DIST_DIR/data/import/"

    : > "$LOG_FILE"
    log "starting Keycloak ${KC_VERSION} on http://127.0.0.1:${HTTP_PORT} (issuer ${PUBLIC_URL}/realms/${REALM}), java $java_home"
    log "CIBA auth channel: $CHANNEL_URI ; SPIFFE bundle endpoint: $SPIFFE_BUNDLE_URI ; log: $LOG_FILE"
    local t0 t1
    t0="$(date +%s.%N)"
    # DEV-ONLY bootstrap admin (master realm). setsid: own process group, so stop can signal it.
    # CIBA_SPIFFE_BUNDLE_URI fills the ${CIBA_SPIFFE_BUNDLE_URI:...} placeholder of the realm
    # import (Keycloak resolves ${VAR:default} in imported realm files from the environment).
    JAVA_HOME="$java_home" \
    CIBA_SPIFFE_BUNDLE_URI="$SPIFFE_BUNDLE_URI" \
    KC_BOOTSTRAP_ADMIN_USERNAME=admin \
    KC_BOOTSTRAP_ADMIN_PASSWORD=admin \
        setsid "$DIST_DIR/bin/kc.sh" --config-file="$KC_CONF" start-dev --import-realm \
            --http-host=127.0.0.1 \
            --http-port="$HTTP_PORT" \
            --http-management-port="$MGMT_PORT" \
            --hostname="$PUBLIC_URL" \
            --spi-ciba-auth-channel--ciba-http-auth-channel--http-authentication-channel-uri="$CHANNEL_URI" \
            </dev/null >>"$LOG_FILE" 2>&1 &
    echo $! > "$PID_FILE"
    if ! wait_ready "$WAIT_TIMEOUT"; then
        log_tail
        cmd_stop >/dev/null 2>&1 || true
        die "Keycloak failed to start (exited, or not ready within ${WAIT_TIMEOUT}s); full log: $LOG_FILE"
    fi
    t1="$(date +%s.%N)"
    # The realm must have been imported by *this* start.
    grep -q "Realm '${REALM}' imported" "$LOG_FILE" || { log_tail; cmd_stop >/dev/null 2>&1 || true; die "realm '${REALM}' was not imported"; }
    local info
    info="$(server_info)" || { log_tail; cmd_stop >/dev/null 2>&1 || true; die "could not read /admin/serverinfo"; }
    # Our protocol mapper must be listed: the realm import accepts unknown mapper ids.
    grep -q '"ciba-session-note-json-mapper"' <<<"$info" || { log_tail; cmd_stop >/dev/null 2>&1 || true; die "protocol mapper ciba-session-note-json-mapper is not deployed (providers/$EXT_JAR_NAME)"; }
    # The SPIFFE identity provider type exists only with the (preview) feature "spiffe" on, and the
    # client authenticator "federated-jwt" only with "client-auth-federated" (keycloak.conf features=).
    grep -q '"id":"spiffe"' <<<"$info" && grep -q '"federated-jwt"' <<<"$info" ||
        { log_tail; cmd_stop >/dev/null 2>&1 || true; die "identity provider type 'spiffe' or client authenticator 'federated-jwt' missing: features spiffe,client-auth-federated not enabled (keycloak.conf features=, KC_FEATURES)"; }
    if grep -q "ERROR" "$LOG_FILE"; then
        log "warning: ERROR lines in $LOG_FILE:"; grep "ERROR" "$LOG_FILE" | head -n 10 >&2
    fi
    log "Keycloak ready: ${PUBLIC_URL}/realms/${REALM} (pid $(cat "$PID_FILE"))"
    awk -v a="$t0" -v b="$t1" 'BEGIN {printf "keycloak startup: %.1f s\n", b - a}'
}

server_info() {  # prints /admin/serverinfo (as the DEV-ONLY bootstrap admin)
    local token
    token="$(curl -fsS --max-time 20 -d grant_type=password -d client_id=admin-cli \
        -d username=admin -d password=admin \
        "http://127.0.0.1:${HTTP_PORT}/realms/master/protocol/openid-connect/token" |
        sed -n 's/.*"access_token":"\([^"]*\)".*/\1/p')" || return 1
    [ -n "$token" ] || return 1
    curl -fsS --max-time 20 -H "Authorization: Bearer $token" "http://127.0.0.1:${HTTP_PORT}/admin/serverinfo"
}

wait_ready() {  # wait_ready TIMEOUT: 0 once ready, 1 on timeout or if the process died
    local timeout="$1" waited=0 pid
    while :; do
        if ! pid="$(pid_alive)"; then
            log "Keycloak process is not running"
            return 1
        fi
        if is_ready; then
            return 0
        fi
        if [ "$waited" -ge "$timeout" ]; then
            return 1
        fi
        sleep 1
        waited=$((waited + 1))
    done
}

cmd_stop() {
    local pid i
    if ! pid="$(pid_alive)"; then
        rm -f "$PID_FILE"
        log "Keycloak is not running"
        return 0
    fi
    log "stopping Keycloak (pid $pid) ..."
    # kc.sh forwards SIGTERM to its java child (or has exec'ed java after a re-augmentation).
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 30); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "still alive after 30 s: SIGKILL to process group $pid"
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    # Anything left in the group we created (e.g. java if kc.sh died first).
    kill -KILL -- "-$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    log "stopped"
}

cmd_status() {
    local pid
    if ! pid="$(pid_alive)"; then
        echo "keycloak: not running"
        return 3
    fi
    if is_ready; then
        echo "keycloak: running (pid $pid), ready: ${PUBLIC_URL}/realms/${REALM} ; health $READY_URL ; log $LOG_FILE"
        return 0
    fi
    echo "keycloak: running (pid $pid), NOT ready ; log $LOG_FILE"
    return 1
}

cmd_wait() {
    pid_alive >/dev/null || die "Keycloak is not running (no live pid in $PID_FILE)"
    if wait_ready "$WAIT_TIMEOUT"; then
        log "ready: ${PUBLIC_URL}/realms/${REALM}"
    else
        log_tail
        die "Keycloak not ready within ${WAIT_TIMEOUT}s"
    fi
}

case "${1:-}" in
    fetch) cmd_fetch ;;
    build-extension) cmd_build_extension ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    wait) cmd_wait ;;
    *)
        sed -n '2,26p' "$0" | sed 's/^# \{0,1\}//' >&2
        exit 2
        ;;
esac
