#!/bin/sh
# install.sh [--root DIR] [--no-systemctl]: installs ems-edge on a Raspberry Pi
# (Raspberry Pi OS / Debian 12 bookworm) from the bundle that
# scripts/cross.sh makes (build/ems-edge-ARCH.tar.gz), or from a source tree.
# Run it as root on the Pi; docs/deploy-edge.md walks through it.
#
#   /usr/local/bin/ems-edge                  the daemon
#   /etc/systemd/system/ems-edge.service     the unit (not enabled here)
#   /etc/sysusers.d/ems-edge.conf            user ems-edge, groups gpio and i2c
#   /etc/udev/rules.d/99-ems-edge.rules      /dev/gpiochip* and /dev/i2c-* access
#   /etc/ems/                                root:ems-edge 0750
#   /etc/ems/ems-edge.conf                   from the example, only if absent
#
# It never overwrites /etc/ems/ems-edge.conf, device.token or ca.pem, so it
# also upgrades an installed daemon (then: systemctl restart ems-edge).
# --root DIR installs under DIR instead of / (packaging, tests) and implies
# --no-systemctl; the user is then created in DIR's /etc/passwd.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
# The Debian 12 packages of the libraries ems-edge links (libgpiod2 for the
# hardware back end); test/suites/85-cross.sh checks them against the ARM
# binaries, docs/deploy-edge.md repeats them.
RUNTIME_PACKAGES="libuv1 libjansson4 libmbedtls14 libmbedx509-1 libmbedcrypto7 libwslay1 libhttp-parser2.9 libsqlite3-0 libgpiod2"
root=
systemctl=1
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=${2:?--root needs a directory}; systemctl=0; shift ;;
        --root=*) root=${1#*=}; systemctl=0 ;;
        --no-systemctl) systemctl=0 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "install: unknown argument '$1'" >&2; exit 2 ;;
    esac
    shift
done

# Files: next to this script in a bundle, or in a source tree
# (edge/packaging/install.sh with the binary in build/).
find_file() { # NAME CANDIDATE...
    name=$1
    shift
    for c in "$@"; do
        if [ -f "$c" ]; then
            echo "$c"
            return 0
        fi
    done
    echo "install: cannot find $name (looked in: $*)" >&2
    return 1
}
bin=$(find_file ems-edge "$here/ems-edge" "$here/../../build/ems-edge")
conf=$(find_file ems-edge.conf.example "$here/ems-edge.conf.example" "$here/../ems-edge.conf.example")
unit=$here/ems-edge.service
sysusers=$here/ems-edge.sysusers
rules=$here/99-ems-edge.rules

if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    echo "install: run as root (sudo $0)" >&2
    exit 1
fi

# A binary for another architecture, or one whose libraries are missing,
# fails here rather than in a restart loop under systemd.
if [ -z "$root" ]; then
    if ! ver=$("$bin" --version 2>&1); then
        echo "install: $bin does not run here:" >&2
        echo "$ver" >&2
        if command -v ldd >/dev/null && ldd "$bin" 2>/dev/null | grep -q 'not found'; then
            ldd "$bin" | grep 'not found' >&2
            echo "install: apt-get install $RUNTIME_PACKAGES" >&2
        fi
        exit 1
    fi
    echo "install: $ver"
fi

install -D -m 0755 "$bin" "$root/usr/local/bin/ems-edge"
install -D -m 0644 "$unit" "$root/etc/systemd/system/ems-edge.service"
install -D -m 0644 "$sysusers" "$root/etc/sysusers.d/ems-edge.conf"
install -D -m 0644 "$rules" "$root/etc/udev/rules.d/99-ems-edge.rules"

# The user and the groups first: /etc/ems is group-owned by ems-edge.
if [ -n "$root" ]; then
    mkdir -p "$root/etc"
    touch "$root/etc/passwd" "$root/etc/group"
    systemd-sysusers --root="$root" "$root/etc/sysusers.d/ems-edge.conf"
else
    systemd-sysusers /etc/sysusers.d/ems-edge.conf
fi

install -d -m 0750 "$root/etc/ems"
if [ -n "$root" ]; then
    # chown by number: the names exist only in $root/etc/group.
    gid=$(awk -F: '$1 == "ems-edge" { print $3 }' "$root/etc/group")
    chown "0:$gid" "$root/etc/ems"
else
    chown root:ems-edge /etc/ems
fi
if [ ! -e "$root/etc/ems/ems-edge.conf" ]; then
    install -m 0640 "$conf" "$root/etc/ems/ems-edge.conf"
    chown --reference="$root/etc/ems" "$root/etc/ems/ems-edge.conf"
    echo "install: wrote /etc/ems/ems-edge.conf from the example: set device_id and cloud_url"
else
    echo "install: kept the existing /etc/ems/ems-edge.conf"
fi

if [ "$systemctl" -eq 1 ]; then
    udevadm control --reload-rules 2>/dev/null && udevadm trigger 2>/dev/null || true
    systemctl daemon-reload
fi

missing=""
[ -s "$root/etc/ems/device.token" ] || missing="$missing /etc/ems/device.token"
[ -s "$root/etc/ems/ca.pem" ] || missing="$missing /etc/ems/ca.pem"
if [ -n "$missing" ]; then
    echo "install: still to provide:$missing (root:ems-edge, mode 0640; docs/deploy-edge.md)"
fi
echo "install: done. Check with: ems-edge --config /etc/ems/ems-edge.conf --check"
echo "install: then: systemctl enable --now ems-edge && journalctl -u ems-edge -f"
