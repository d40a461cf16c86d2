#!/usr/bin/env bash
# scripts/deps.sh [--check]: installs the Debian packages that the build, the
# tests and the demo need. With --check it only says whether any is missing
# (exit 1 if so). Runs as root (CI and the dev machines are root); otherwise
# it uses sudo.
#
# That includes the Raspberry Pi cross toolchains (arm64 and armhf, with
# qemu-user), installed by `scripts/cross.sh --install-only`, which owns
# their package lists and refuses an install that would remove a native
# package; test/suites/85-cross.sh and 86-edge-deb.sh fail without them.
set -euo pipefail

PACKAGES=(
    build-essential pkg-config clang libclang-rt-14-dev
    libuv1-dev libwslay-dev libmbedtls-dev libjansson-dev libpq-dev
    libgpiod-dev libhttp-parser-dev libsqlite3-dev
    # The gateways' message bus (docs/scaling.md): the C client with its
    # libuv adapter, and the server test/suites/57-gateway-bus.py starts.
    libnats-dev nats-server
    # 80-compose.sh checks docker/haproxy.cfg with `haproxy -c`.
    haproxy
    postgresql-15 postgresql-client-15
    # test/suites/40-dbwriter-tsdb-emu.py builds an emulated timescaledb
    # extension (test/lib/tsdb-emu) against the server's headers.
    postgresql-server-dev-15
    python3-jsonschema python3-websockets
    openssl ca-certificates curl iproute2 procps psmisc
    nodejs chromium
    docker-compose
    # make deb-arm64/deb-armhf and test/suites/86-edge-deb.sh: dpkg-deb and
    # dpkg-shlibdeps, lintian, and an arm64 bookworm root run under proot+qemu.
    dpkg-dev lintian debootstrap proot
    # test/suites/64-hwemu.sh: Debian's I2C and GPIO tools against the emulator.
    i2c-tools gpiod
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

# The cross toolchains: cross.sh knows what they are made of.
cross_ok=1
cross_missing=$("$(dirname "$0")/cross.sh" --check arm64 armhf) || cross_ok=0

if [ "${1:-}" = "--check" ]; then
    rc=0
    if [ ${#missing[@]} -gt 0 ]; then
        echo "deps: missing: ${missing[*]}"
        rc=1
    fi
    if [ "$cross_ok" -eq 0 ]; then
        echo "deps: ${cross_missing#cross: }"
        rc=1
    fi
    exit $rc
fi

if [ ${#missing[@]} -eq 0 ] && [ "$cross_ok" -eq 1 ]; then
    echo "deps: all Debian packages present"
    exit 0
fi

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
export DEBIAN_FRONTEND=noninteractive
if [ ${#missing[@]} -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    $SUDO apt-get update -q || echo "deps: apt-get update reported an error; trying the install anyway"
    $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# After the native packages: the cross toolchain needs their -dev headers,
# and its simulation must see them installed to refuse removing them. A
# refusal does not stop make test; 85-cross and 86-edge-deb then fail and
# say so.
if [ "$cross_ok" -eq 0 ]; then
    echo "deps: installing the cross toolchains (scripts/cross.sh --install-only arm64 armhf)"
    if ! "$(dirname "$0")/cross.sh" --install-only arm64 armhf; then
        echo "deps: the cross toolchains were NOT installed (see above); test/suites/85-cross.sh and 86-edge-deb.sh will fail" >&2
    fi
fi
