#!/usr/bin/env bash
# scripts/cross.sh [--no-install] [--build-root DIR] [ARCH...]
# scripts/cross.sh --install-only [ARCH...]   |   scripts/cross.sh --check [ARCH...]
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
#   scripts/cross.sh --install-only  -> install the toolchain, build nothing
#                                       (scripts/deps.sh runs this for make test)
#   scripts/cross.sh --check         -> exit 1 and name what is missing; installs nothing
#   scripts/cross.sh --judge FILE    -> the install decision for an `apt-get -s
#                                       install` transcript in FILE (- = stdin);
#                                       exit 0 = would install, 1 = would refuse (tests)
#
# The toolchain: Debian's crossbuild-essential-ARCH plus the ARCH builds of the
# libraries. Why not simply libFOO-dev:ARCH for everything: libwslay-dev,
# libhttp-parser-dev, libpq-dev and (on this archive) libsqlite3-dev cannot be
# installed for two architectures at once, and installing the foreign one would
# REMOVE the amd64 package that the native build needs. So for those we install
# only the runtime library (libwslay1:ARCH, libhttp-parser2.9:ARCH,
# libsqlite3-0:ARCH), take the architecture-independent headers from the amd64
# -dev package, and link the versioned file by name (-l:libwslay.so.1).
#
# Before installing, the script simulates the install (apt-get -s) and refuses
# if apt would REMOVE any package: that is how a foreign -dev package would
# break the native build. Upgrades are allowed and listed: a foreign library
# must have the same version as its native twin (Multi-Arch: same), so on a
# machine whose native packages are behind the archive (say, perl or libc6
# before their security update) the install upgrades them, and refusing that
# would refuse every fresh machine.
#
# The binaries are built with Debian's hardening flags (dpkg-buildflags with
# hardening=+all: fortify, stack protector, full RELRO, PIE) and link against
# Debian bookworm's sonames (libmbedtls.so.14, libwslay.so.1,
# libhttp_parser.so.2.9, glibc 2.36), so the Pi needs Raspberry Pi OS / Debian
# bookworm with the runtime packages of docs/deploy-edge.md (or the .deb of
# scripts/deb.sh, which depends on them).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

install=1
mode=build
judge_file=
build_root=build
archs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) install=0 ;;
        --install-only) mode=install ;;
        --check) mode=check; install=0 ;;
        --judge) mode=judge; judge_file=${2:?--judge needs a file (- for stdin)}; shift ;;
        --build-root) build_root=${2:?--build-root needs a directory}; shift ;;
        --build-root=*) build_root=${1#*=} ;;
        arm64|armhf) archs+=("$1") ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "cross: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#archs[@]} -gt 0 ] || archs=(arm64 armhf)

# shellcheck source=lib/arch.sh
. "$ROOT/scripts/lib/arch.sh"

# The foreign packages one architecture needs. Headers of wslay, http-parser
# and sqlite come from the native -dev packages (scripts/deps.sh installs them;
# they are listed below too, so --check and the install see them).
packages_of() {
    local a=$1
    echo "crossbuild-essential-$a libuv1-dev:$a libmbedtls-dev:$a libjansson-dev:$a" \
         "libgpiod-dev:$a libsqlite3-0:$a libwslay1:$a libhttp-parser2.9:$a qemu-user" \
         "libwslay-dev libhttp-parser-dev libsqlite3-dev"
}

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

# The packages of all the given architectures that are not installed, once each.
missing_of() {
    local a p out=()
    for a in "$@"; do
        for p in $(packages_of "$a"); do
            installed "$p" || [[ " ${out[*]:-} " == *" $p "* ]] || out+=("$p")
        done
    done
    echo "${out[*]:-}"
}

# judge_simulation < TRANSCRIPT: decides on the output of `apt-get -s install`.
# Refuses (returns 1) if apt would remove (or purge) any package; allows
# upgrades and new packages, and says what they are. Only the transcript's
# Inst/Remv/Purg lines count:
#   Inst perl [5.36.0-7+deb12u1] (5.36.0-7+deb12u2 Debian-Security:12 [amd64])  an upgrade
#   Inst libuv1:arm64 (1.44.2-1+deb12u1 Debian:12.11 [arm64])                    a new package
#   Remv libwslay-dev [1.1.1-3+b1]                                               a removal
judge_simulation() {
    local sim new upgrades removals
    sim=$(cat)
    new=$(awk '$1 == "Inst" && $3 !~ /^\[/' <<<"$sim" | wc -l)
    upgrades=$(awk '$1 == "Inst" && $3 ~ /^\[/ {
        old = $3; gsub(/[][]/, "", old); new = $4; sub(/^\(/, "", new)
        printf "%s (%s -> %s)\n", $2, old, new }' <<<"$sim")
    removals=$(awk '$1 == "Remv" || $1 == "Purg" { v = $3; gsub(/[][]/, "", v); printf "%s %s\n", $2, v }' <<<"$sim")
    echo "cross: apt would install $new new package(s), upgrade $(grep -c . <<<"$upgrades") and remove $(grep -c . <<<"$removals")"
    if [ -n "$upgrades" ]; then
        echo "cross: upgrades (allowed; a foreign library must match its native twin's version):"
        sed 's/^/cross:   /' <<<"$upgrades"
    fi
    if [ -n "$removals" ]; then
        echo "cross: removals (refused: the native build needs these):" >&2
        sed 's/^/cross:   /' <<<"$removals" >&2
        return 1
    fi
    return 0
}

# Installs what the given architectures miss, or refuses without changing
# anything but the foreign-architecture list (harmless on its own).
ensure_toolchain() {
    local missing a
    missing=$(missing_of "$@")
    [ -z "$missing" ] && return 0
    if [ "$install" -eq 0 ]; then
        echo "cross: $* toolchain incomplete, missing: $missing" >&2
        echo "cross: run scripts/cross.sh --install-only $* (as root; scripts/deps.sh does) to install it" >&2
        return 1
    fi
    local SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    export DEBIAN_FRONTEND=noninteractive
    for a in "$@"; do
        if ! dpkg --print-foreign-architectures | grep -qx "$a"; then
            echo "cross: dpkg --add-architecture $a"
            $SUDO dpkg --add-architecture "$a"
        fi
    done
    # One bad security index for armhf makes apt-get update exit 100 while
    # the install still works: report it and go on.
    echo "cross: apt-get update"
    local upd
    if ! upd=$($SUDO apt-get update -q 2>&1); then
        grep -E '^(E|W):' <<<"$upd" | head -n 5 | sed 's/^/cross:   /'
        echo "cross: apt-get update reported an error (above); trying the install anyway"
    fi
    # Simulate first: the native build must keep every amd64 -dev package.
    echo "cross: simulating: apt-get install $missing"
    local sim
    if ! sim=$(apt-get -s install --no-install-recommends -y $missing 2>&1); then
        echo "$sim" | tail -n 15 >&2
        echo "cross: apt cannot install the $* toolchain; nothing was installed" >&2
        return 1
    fi
    if ! judge_simulation <<<"$sim"; then
        echo "cross: installing the $* toolchain would remove the packages above; refusing, nothing was installed" >&2
        return 1
    fi
    echo "cross: installing $missing"
    # --no-remove: should the real run differ from the simulation, apt stops
    # rather than remove anything.
    $SUDO apt-get install -q -y --no-remove --no-install-recommends $missing >/dev/null
    missing=$(missing_of "$@")
    if [ -n "$missing" ]; then
        echo "cross: still missing after the install: $missing" >&2
        return 1
    fi
    echo "cross: $* toolchain installed"
}

build_one() {
    local a=$1 t out pcdir libs
    t=$(triple_of "$a")
    out=$build_root/$a
    pcdir=/usr/lib/$t/pkgconfig:/usr/share/pkgconfig
    # pkg-config of the target's libraries only (never the host's).
    libs="$(PKG_CONFIG_LIBDIR=$pcdir pkg-config --libs libuv jansson) \
-lmbedtls -lmbedx509 -lmbedcrypto -l:libwslay.so.1 -l:libhttp_parser.so.2.9 -lm"
    # Debian's hardening flags for the target. The Makefile appends its own
    # flags to CFLAGS and LDFLAGS from the environment, and has no CPPFLAGS
    # of its own, so the preprocessor flags (-D_FORTIFY_SOURCE=2) go in CFLAGS.
    local hcflags hcppflags hldflags
    hcflags=$(DEB_HOST_ARCH=$a DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CFLAGS)
    hcppflags=$(DEB_HOST_ARCH=$a DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get CPPFLAGS)
    hldflags=$(DEB_HOST_ARCH=$a DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get LDFLAGS)
    # make does not track flags: objects of a build with other flags (an
    # older cross.sh) are thrown away rather than linked with the new ones.
    local stamp="$t-gcc $hcflags $hcppflags $hldflags"
    if [ -d "$out/obj" ] && [ "$(cat "$out/.cross-flags" 2>/dev/null)" != "$stamp" ]; then
        echo "cross: the flags changed; rebuilding $out from scratch"
        rm -rf "$out/obj" "$out"/*.a "$out/ems-edge"
    fi
    mkdir -p "$out"
    echo "$stamp" >"$out/.cross-flags"
    echo "cross: building $out/ems-edge with $t-gcc ($hcppflags $hldflags)"
    # The top-level Makefile does the work; only the compiler, the archiver and
    # the link lines change. LIBS_* on the command line override the Makefile's.
    CFLAGS="$hcflags $hcppflags" LDFLAGS="$hldflags" PKG_CONFIG_LIBDIR=$pcdir \
    make --no-print-directory -j"$(nproc)" \
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

case "$mode" in
    judge)
        if [ "$judge_file" = - ]; then judge_simulation; else judge_simulation <"$judge_file"; fi
        exit $?
        ;;
    check)
        missing=$(missing_of "${archs[@]}")
        if [ -n "$missing" ]; then
            echo "cross: missing for ${archs[*]}: $missing"
            exit 1
        fi
        exit 0
        ;;
    install)
        ensure_toolchain "${archs[@]}"
        exit $?
        ;;
esac

if [ ! -f edge/main.c ]; then
    echo "cross: edge/main.c does not exist yet; nothing to build" >&2
    exit 1
fi

# One install for every architecture asked for (one apt-get update, one
# simulation); a failure there fails them all, as the build would.
tc=0
ensure_toolchain "${archs[@]}" || tc=1
rc=0
for a in "${archs[@]}"; do
    if [ "$tc" -eq 0 ] && build_one "$a" && smoke_one "$a" && bundle_one "$a"; then
        echo "cross: $a ok: $build_root/$a/ems-edge"
    else
        echo "cross: $a FAILED" >&2
        rc=1
    fi
done
exit $rc
