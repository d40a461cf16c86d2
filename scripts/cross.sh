#!/usr/bin/env bash
# scripts/cross.sh [--no-install] [--build-root DIR] [ARCH...]
#
# Cross-compiles ems-edge for the Raspberry Pi on a Debian 12 (bookworm) amd64
# machine and smoke-runs each binary under qemu-user. ARCH is arm64 (Pi 3/4/5
# with a 64-bit OS) and/or armhf (Pi 2/3/4 with a 32-bit OS; Debian's armhf is
# ARMv7, so not the ARMv6 Pi 1 / Zero). Default: both.
#
#   scripts/cross.sh                 -> build/arm64/ems-edge, build/armhf/ems-edge,
#                                       build/ems-edge-arm64.tar.gz, ...-armhf.tar.gz
#   scripts/cross.sh arm64           -> only arm64
#   scripts/cross.sh --no-install    -> fail instead of installing the toolchain
#   scripts/cross.sh --build-root D  -> D/arm64/ems-edge ... (tests use a temp dir)
#
# The toolchain: Debian's crossbuild-essential-ARCH plus the ARCH builds of the
# libraries. Why not simply libFOO-dev:ARCH for everything: libwslay-dev,
# libhttp-parser-dev, libpq-dev and (on this archive) libsqlite3-dev cannot be
# installed for two architectures at once, and installing the foreign one would
# REMOVE the amd64 package that the native build needs. So for those we install
# only the runtime library (libwslay1:ARCH, libhttp-parser2.9:ARCH,
# libsqlite3-0:ARCH), take the architecture-independent headers from the amd64
# -dev package, and link the versioned file by name (-l:libwslay.so.1). Before
# installing, the script simulates the install and refuses if apt would remove
# or upgrade anything.
#
# The binaries link against Debian bookworm's sonames (libmbedtls.so.14,
# libwslay.so.1, libhttp_parser.so.2.9, glibc 2.36), so the Pi needs Raspberry
# Pi OS / Debian bookworm with the runtime packages of docs/deploy-edge.md.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

install=1
build_root=build
archs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) install=0 ;;
        --build-root) build_root=${2:?--build-root needs a directory}; shift ;;
        --build-root=*) build_root=${1#*=} ;;
        arm64|armhf) archs+=("$1") ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "cross: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#archs[@]} -gt 0 ] || archs=(arm64 armhf)

triple_of() {
    case "$1" in
        arm64) echo aarch64-linux-gnu ;;
        armhf) echo arm-linux-gnueabihf ;;
    esac
}
qemu_of() {
    case "$1" in
        arm64) echo qemu-aarch64 ;;
        armhf) echo qemu-arm ;;
    esac
}

# The foreign packages one architecture needs. Headers of wslay, http-parser
# and sqlite come from the native -dev packages (scripts/deps.sh installs them).
packages_of() {
    local a=$1
    echo "crossbuild-essential-$a libuv1-dev:$a libmbedtls-dev:$a libjansson-dev:$a" \
         "libgpiod-dev:$a libsqlite3-0:$a libwslay1:$a libhttp-parser2.9:$a qemu-user"
}

missing_of() {
    local p out=()
    for p in $(packages_of "$1"); do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
    done
    for p in libwslay-dev libhttp-parser-dev libsqlite3-dev; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || out+=("$p")
    done
    echo "${out[*]:-}"
}

ensure_toolchain() {
    local a=$1 missing
    missing=$(missing_of "$a")
    [ -z "$missing" ] && return 0
    if [ "$install" -eq 0 ]; then
        echo "cross: $a toolchain incomplete, missing: $missing" >&2
        echo "cross: run scripts/cross.sh $a (as root) to install it" >&2
        return 1
    fi
    local SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
        echo "cross: dpkg --add-architecture $a"
        $SUDO dpkg --add-architecture "$a"
    fi
    # One bad security index for armhf makes apt-get update exit 100 while
    # the install still works: report it and go on.
    $SUDO apt-get update -q >/dev/null 2>&1 || echo "cross: apt-get update reported an error; trying the install anyway"
    # Simulate first: the native build must keep every amd64 -dev package.
    local sim
    sim=$(apt-get -s install --no-remove --no-install-recommends -y $missing 2>&1) || {
        echo "$sim" | tail -n 15 >&2
        echo "cross: apt cannot install the $a toolchain without breaking something; nothing was changed" >&2
        return 1
    }
    if echo "$sim" | grep -qE '^(Remv|Inst [^ ]+ \[)'; then
        echo "$sim" | grep -E '^(Remv|Inst [^ ]+ \[)' >&2
        echo "cross: installing the $a toolchain would remove or upgrade the packages above; refusing" >&2
        return 1
    fi
    echo "cross: installing $missing"
    $SUDO apt-get install -q -y --no-remove --no-install-recommends $missing >/dev/null
}

build_one() {
    local a=$1 t out pcdir libs
    t=$(triple_of "$a")
    out=$build_root/$a
    pcdir=/usr/lib/$t/pkgconfig:/usr/share/pkgconfig
    # pkg-config of the target's libraries only (never the host's).
    libs="$(PKG_CONFIG_LIBDIR=$pcdir pkg-config --libs libuv jansson) \
-lmbedtls -lmbedx509 -lmbedcrypto -l:libwslay.so.1 -l:libhttp_parser.so.2.9 -lm"
    echo "cross: building $out/ems-edge with $t-gcc"
    # The top-level Makefile does the work; only the compiler, the archiver and
    # the link lines change. LIBS_* on the command line override the Makefile's.
    PKG_CONFIG_LIBDIR=$pcdir make --no-print-directory -j"$(nproc)" \
        BUILD="$out" CC="$t-gcc" AR="$t-ar" \
        LIBS_COMMON="$libs" \
        LIBS_EDGE="$libs -l:libsqlite3.so.0 $(PKG_CONFIG_LIBDIR=$pcdir pkg-config --libs libgpiod)" \
        "$out/ems-edge"
}

smoke_one() {
    local a=$1 bin q kind
    bin=$build_root/$a/ems-edge
    q=$(qemu_of "$a")
    # readelf (binutils) rather than file(1), which a build machine may lack.
    kind=$(readelf -h "$bin" 2>&1 | awk -F: '/Class|Machine|Flags/ { gsub(/^ +/, "", $2); printf "%s; ", $2 }')
    case "$a:$kind" in
        arm64:"ELF64; AArch64;"*|armhf:"ELF32; ARM;"*"hard-float"*) ;;
        *) echo "cross: $bin is not an $a executable: $kind" >&2; return 1 ;;
    esac
    # binfmt_misc may not be mounted here, so run through qemu-user explicitly.
    # --version first; --help if the daemon has no --version.
    local flag outp
    for flag in --version --help; do
        if outp=$("$q" "$bin" "$flag" 2>&1 </dev/null); then
            echo "cross: $q $bin $flag: $(echo "$outp" | head -n 1)"
            return 0
        fi
    done
    echo "cross: $q $bin --version/--help failed:" >&2
    echo "$outp" | tail -n 5 >&2
    return 1
}

# build/ems-edge-ARCH.tar.gz: the binary and edge/packaging, ready to copy to
# the Pi and install with its install.sh (docs/deploy-edge.md).
bundle_one() {
    local a=$1 name stage
    name=ems-edge-$a
    stage=$(mktemp -d)
    mkdir "$stage/$name"
    cp "$build_root/$a/ems-edge" edge/packaging/install.sh edge/packaging/ems-edge.service \
       edge/packaging/ems-edge.sysusers edge/packaging/99-ems-edge.rules \
       edge/ems-edge.conf.example "$stage/$name/"
    tar -C "$stage" --owner=0 --group=0 -czf "$build_root/$name.tar.gz" "$name"
    rm -rf "$stage"
    echo "cross: bundle $build_root/$name.tar.gz"
}

if [ ! -f edge/main.c ]; then
    echo "cross: edge/main.c does not exist yet; nothing to build" >&2
    exit 1
fi

rc=0
for a in "${archs[@]}"; do
    if ensure_toolchain "$a" && build_one "$a" && smoke_one "$a" && bundle_one "$a"; then
        echo "cross: $a ok: $build_root/$a/ems-edge"
    else
        echo "cross: $a FAILED" >&2
        rc=1
    fi
done
exit $rc
