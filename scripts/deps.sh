#!/usr/bin/env bash
# scripts/deps.sh [--check]: installs the Debian packages that the build, the
# tests and the demo need. With --check it only says whether any is missing
# (exit 1 if so). Runs as root (CI and the dev machines are root); otherwise
# it uses sudo.
set -euo pipefail

PACKAGES=(
    build-essential pkg-config clang libclang-rt-14-dev
    libuv1-dev libwslay-dev libmbedtls-dev libjansson-dev libpq-dev
    libgpiod-dev libhttp-parser-dev libsqlite3-dev
    postgresql-15 postgresql-client-15
    python3-jsonschema python3-websockets
    openssl ca-certificates curl iproute2 procps psmisc
    nodejs chromium
    docker-compose
)

missing=()
for p in "${PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done

# Debian's nodejs may or may not bring npm (NodeSource's does); ask for the
# separate package only when there is no npm at all.
command -v npm >/dev/null 2>&1 || missing+=(npm)

if [ "${1:-}" = "--check" ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        echo "deps: missing: ${missing[*]}"
        exit 1
    fi
    exit 0
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "deps: all Debian packages present"
    exit 0
fi

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q || echo "deps: apt-get update reported an error; trying the install anyway"
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
