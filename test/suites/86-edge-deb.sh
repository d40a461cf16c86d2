#!/usr/bin/env bash
# 86-edge-deb.sh: the Debian packages of ems-edge (scripts/deb.sh through
# `make deb-arm64 deb-armhf`, built into a scratch directory):
#   - dpkg-deb --info: name, version (the binary's firmware version plus the
#     changelog's revision), architecture, maintainer, and Depends that cover
#     every library the binary links, plus adduser and init-system-helpers;
#   - dpkg-deb --contents: every file where docs/deploy-edge.md says, owned
#     by root with the right mode, and nothing else; a stripped binary of
#     the right architecture; the packaged unit is edge/packaging's with
#     /usr/bin; conffiles, md5sums, changelog and copyright in order;
#   - lintian (Debian 12's) has no error and no warning that is not
#     overridden, and every override says why;
#   - the same tree gives a byte-identical .deb;
#   - installed with dpkg in an arm64 Debian bookworm root (debootstrap, then
#     proot + qemu-aarch64: binfmt_misc is not needed), the postinst creates
#     the user ems-edge in the groups gpio and i2c, sets the owners, does not
#     enable the service while the device is not provisioned and does once
#     it is; ems-edge --version and --check run there with the installed
#     configuration; an upgrade keeps the edited configuration; remove keeps
#     it and the administrator's enablement (a reinstall comes back as it
#     was); purge deletes configuration, token, buffer and unit links.
# The root is made once a day and cached in build/debroot/ (about 3 minutes
# the first time; without a route to the Debian archive that case is skipped
# and says why). Needs what scripts/deps.sh installs: the cross toolchain,
# lintian, debootstrap, proot. EMS_SKIP_CROSS=1 skips the suite.
# Prints TAP lines "ok - NAME" / "not ok - NAME: why".
set -u
ROOT=${EMS_ROOT:-$(cd "$(dirname "$0")/../.." && pwd)}
cd "$ROOT" || exit 1

. "$ROOT/test/lib/tap.sh" # ok, notok, skip, note, tap_status
check() { # NAME WHY-IF-FAILED CONDITION...
    local name=$1 why=$2
    shift 2
    if "$@"; then ok "$name"; else notok "$name" "$why"; fi
}

ARCHS="arm64 armhf"
triple() { case "$1" in arm64) echo aarch64-linux-gnu ;; armhf) echo arm-linux-gnueabihf ;; esac; }
qemu() { case "$1" in arm64) echo qemu-aarch64 ;; armhf) echo qemu-arm ;; esac; }

# ---------------------------------------------------------------- tools
missing=""
why=$(scripts/cross.sh --check $ARCHS 2>&1) || missing="${why#cross: }"
for t in dpkg-deb dpkg-shlibdeps lintian debootstrap proot; do
    command -v "$t" >/dev/null 2>&1 || missing="$missing $t"
done
if [ -n "$missing" ]; then
    if [ "${EMS_SKIP_CROSS:-}" = 1 ]; then
        skip "deb: build, lint and install the packages" "EMS_SKIP_CROSS=1 ($missing)"
        exit 0
    fi
    notok "deb: the tools are installed" "scripts/deps.sh (make test's first step) did not install them: $missing"
    exit 1
fi

TMP=$(mktemp -d /tmp/ems-deb-test.XXXXXX)
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

# ---------------------------------------------------------------- build
B=$TMP/build
if ! make --no-print-directory BUILD="$B" deb-arm64 deb-armhf >"$TMP/make.log" 2>&1; then
    notok "make deb-arm64 deb-armhf" "$(grep -E 'error|FAILED|deb:' "$TMP/make.log" | head -n 4 | tr '\n' ' ')"
fi
built=""
for a in $ARCHS; do
    # shellcheck disable=SC2086 # a glob on purpose
    set -- $B/ems-edge_*_$a.deb
    if [ -f "$1" ] && [ $# -eq 1 ]; then
        ok "make deb-$a: $(basename "$1")"
        built="$built $a"
    else
        notok "make deb-$a makes one ems-edge_VERSION_$a.deb" "found: $*"
    fi
done
[ -n "$built" ] || exit 1

# ---------------------------------------------------------------- per package
# What the package must hold: path, mode, owner. Directories are listed by
# dpkg-deb too; every entry not here must be a directory.
EXPECTED="./usr/bin/ems-edge -rwxr-xr-x
./lib/systemd/system/ems-edge.service -rw-r--r--
./usr/lib/sysusers.d/ems-edge.conf -rw-r--r--
./lib/udev/rules.d/99-ems-edge.rules -rw-r--r--
./etc/ems/ems-edge.conf -rw-r--r--
./var/lib/ems-edge/ drwxr-xr-x
./usr/share/doc/ems-edge/copyright -rw-r--r--
./usr/share/doc/ems-edge/changelog.Debian.gz -rw-r--r--
./usr/share/doc/ems-edge/README.Debian -rw-r--r--
./usr/share/man/man8/ems-edge.8.gz -rw-r--r--
./usr/share/lintian/overrides/ems-edge -rw-r--r--"

for a in $built; do
    deb=$(echo "$B"/ems-edge_*_"$a".deb)
    bin=$B/$a/ems-edge
    X=$TMP/x-$a
    mkdir -p "$X"
    dpkg-deb -R "$deb" "$X" # files and DEBIAN/

    # --info
    field() { dpkg-deb -f "$deb" "$1"; }
    fw=$("$(qemu "$a")" "$bin" --version 2>&1)
    ver=$(field Version)
    bad=""
    [ "$(field Package)" = ems-edge ] || bad="$bad Package=$(field Package)"
    [ "$(field Architecture)" = "$a" ] || bad="$bad Architecture=$(field Architecture)"
    [[ "$ver" =~ ^${fw#ems-edge }-[0-9]+$ ]] || bad="$bad Version=$ver (binary: $fw)"
    [[ "$(field Maintainer)" =~ ^[^\<]+\ \<[^@\>]+@[^\>]+\>$ ]] || bad="$bad Maintainer=$(field Maintainer)"
    [[ "$(field Installed-Size)" =~ ^[0-9]+$ ]] || bad="$bad Installed-Size=$(field Installed-Size)"
    for f in Section Priority Homepage Description; do [ -n "$(field "$f")" ] || bad="$bad no $f"; done
    [ "$(basename "$deb")" = "ems-edge_${ver}_$a.deb" ] || bad="$bad file name $(basename "$deb")"
    if [ -z "$bad" ]; then
        ok "deb $a: control fields (ems-edge $ver, $a, $(field Maintainer))"
    else
        notok "deb $a: control fields" "$bad"
    fi

    # Depends: every NEEDED library's package, and the maintainer scripts' tools.
    deps=" $(field Depends | tr ',|' '\n\n' | sed 's/(.*//; s/ //g' | tr '\n' ' ') "
    miss=""
    for p in adduser init-system-helpers; do [[ "$deps" == *" $p "* ]] || miss="$miss $p"; done
    for lib in $(objdump -p "$X/usr/bin/ems-edge" | awk '$1 == "NEEDED" { print $2 }'); do
        pkg=$(dpkg -S "/usr/lib/$(triple "$a")/$lib" 2>/dev/null | head -n 1 | cut -d: -f1)
        [ -n "$pkg" ] || pkg=$(dpkg -S "/lib/$(triple "$a")/$lib" 2>/dev/null | head -n 1 | cut -d: -f1)
        [[ -n "$pkg" && "$deps" == *" $pkg "* ]] || miss="$miss $lib(${pkg:-no package})"
    done
    if [ -z "$miss" ]; then
        ok "deb $a: Depends covers every library the binary links, adduser and init-system-helpers"
    else
        notok "deb $a: Depends covers every library the binary links" "missing:$miss; Depends: $(field Depends)"
    fi

    # --contents: owners, modes, nothing unexpected.
    contents=$(dpkg-deb --contents "$deb")
    bad=""
    while read -r path mode; do
        line=$(awk -v p="$path" '$6 == p' <<<"$contents")
        if [ -z "$line" ]; then bad="$bad $path(missing)"; continue; fi
        read -r m o _ <<<"$line"
        [ "$m $o" = "$mode root/root" ] || bad="$bad $path($m $o)"
    done <<<"$EXPECTED"
    extra=$(awk '$1 !~ /^d/ { print $6 }' <<<"$contents" | grep -vxF -f <(cut -d' ' -f1 <<<"$EXPECTED"))
    [ -z "$extra" ] || bad="$bad unexpected:$(echo "$extra" | tr '\n' ' ')"
    notroot=$(awk '$2 != "root/root" { print $6 }' <<<"$contents")
    [ -z "$notroot" ] || bad="$bad not root/root:$(echo "$notroot" | tr '\n' ' ')"
    if [ -z "$bad" ]; then
        ok "deb $a: contents: binary, unit, sysusers, udev rules, conffile, state dir, docs, man page; root/root, right modes"
    else
        notok "deb $a: contents" "$bad"
    fi

    # The binary: stripped, for $a, hardened, and the one cross.sh tested.
    hdr=$(readelf -h "$X/usr/bin/ems-edge" 2>&1)
    secs=$(readelf -S "$X/usr/bin/ems-edge" 2>&1)
    dyn=$(readelf -d "$X/usr/bin/ems-edge" 2>&1)
    bad=""
    case "$a" in
        arm64) [[ "$hdr" == *AArch64* ]] || bad="$bad not AArch64" ;;
        armhf) [[ "$hdr" == *"ARM"* && "$hdr" == *"hard-float"* ]] || bad="$bad not ARM hard-float" ;;
    esac
    [[ "$secs" != *.symtab* && "$secs" != *.debug_* ]] || bad="$bad not stripped"
    [[ "$dyn" == *BIND_NOW* || "$dyn" == *"FLAGS"*NOW* ]] || bad="$bad no BIND_NOW"
    [[ "$hdr" == *"DYN (Position-Independent Executable"* ]] || bad="$bad not PIE"
    readelf -s --wide "$bin" | grep -q '__[a-z_]*_chk' || bad="$bad no fortified calls"
    if [ -z "$bad" ]; then
        ok "deb $a: /usr/bin/ems-edge is a stripped $a PIE with full RELRO and fortified calls"
    else
        notok "deb $a: /usr/bin/ems-edge is a stripped, hardened $a binary" "$bad"
    fi

    # The unit is the source tree's with the packaged path, and keeps its
    # device access.
    unit=$X/lib/systemd/system/ems-edge.service
    if diff <(sed 's#/usr/local/bin/ems-edge#/usr/bin/ems-edge#g' edge/packaging/ems-edge.service) "$unit" >/dev/null &&
        grep -qx 'ExecStart=/usr/bin/ems-edge --config /etc/ems/ems-edge.conf' "$unit" &&
        grep -qx 'DeviceAllow=char-gpiochip rw' "$unit" && grep -qx 'DeviceAllow=char-i2c rw' "$unit" &&
        grep -qx 'SupplementaryGroups=gpio i2c' "$unit"; then
        ok "deb $a: the unit runs /usr/bin/ems-edge, with DeviceAllow for gpiochip and i2c and SupplementaryGroups=gpio i2c"
    else
        notok "deb $a: the packaged unit" "$(diff <(sed 's#/usr/local/bin#/usr/bin#g' edge/packaging/ems-edge.service) "$unit" | head -n 4 | tr '\n' ' ')"
    fi
    if command -v systemd-analyze >/dev/null 2>&1; then
        mkdir -p "$TMP/unit-$a"
        sed 's#/usr/bin/ems-edge#/bin/true#g' "$unit" >"$TMP/unit-$a/ems-edge.service"
        out=$(cd "$TMP/unit-$a" && systemd-analyze verify ./ems-edge.service 2>&1)
        check "deb $a: systemd-analyze verify accepts the packaged unit" "$(echo "$out" | head -n 3 | tr '\n' ' ')" \
            test -z "$out"
    fi

    # Control area: conffiles, md5sums, maintainer scripts.
    bad=""
    [ "$(cat "$X/DEBIAN/conffiles" 2>/dev/null)" = /etc/ems/ems-edge.conf ] || bad="$bad conffiles: $(tr '\n' ' ' <"$X/DEBIAN/conffiles" 2>/dev/null)"
    sums=$(cd "$X" && md5sum --quiet -c DEBIAN/md5sums 2>&1) || bad="$bad md5sums: $sums"
    listed=$(awk '{ print $2 }' "$X/DEBIAN/md5sums" | sort)
    want=$(cd "$X" && find . -type f ! -path './DEBIAN/*' ! -path ./etc/ems/ems-edge.conf -printf '%P\n' | sort)
    [ "$listed" = "$want" ] || bad="$bad md5sums lists $(echo "$listed" | wc -l) files, want $(echo "$want" | wc -l)"
    for s in postinst prerm postrm; do
        [ -x "$X/DEBIAN/$s" ] || { bad="$bad $s missing"; continue; }
        sh -n "$X/DEBIAN/$s" 2>/dev/null || bad="$bad $s: sh -n fails"
        if command -v shellcheck >/dev/null 2>&1; then
            shellcheck -s sh -S warning "$X/DEBIAN/$s" >/dev/null 2>&1 || bad="$bad $s: shellcheck"
        fi
    done
    if [ -z "$bad" ]; then
        ok "deb $a: conffiles, md5sums and maintainer scripts (sh -n, shellcheck)"
    else
        notok "deb $a: conffiles, md5sums and maintainer scripts" "$bad"
    fi

    # Documentation: changelog for this version, copyright, the man page.
    bad=""
    cl=$(gzip -dc "$X/usr/share/doc/ems-edge/changelog.Debian.gz" 2>/dev/null | head -n 1)
    [[ "$cl" == "ems-edge ($ver) "* ]] || bad="$bad changelog starts '$cl'"
    grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' \
        "$X/usr/share/doc/ems-edge/copyright" || bad="$bad copyright not machine-readable"
    man=$(gzip -dc "$X/usr/share/man/man8/ems-edge.8.gz" 2>/dev/null)
    for opt in $("$(qemu "$a")" "$bin" --help 2>/dev/null | grep -oE -- '--[a-z][a-z-]+' | sort -u); do
        grep -qF -- "${opt//-/\\-}" <<<"$man" || bad="$bad man page lacks $opt"
    done
    if [ -z "$bad" ]; then
        ok "deb $a: changelog.Debian.gz for $ver, DEP-5 copyright, man page with every option of --help"
    else
        notok "deb $a: changelog, copyright, man page" "$bad"
    fi

    # lintian: no error, no warning unless overridden (with a reason).
    lint=$(lintian "$deb" 2>&1 | grep -v 'running with root privileges')
    ew=$(grep -E '^(E|W): ' <<<"$lint")
    if [ -z "$ew" ]; then
        ok "deb $a: lintian $(lintian --version | awk '{ print $2 }'): no error, no warning$(grep -c '^[IP]: ' <<<"$lint" | sed 's/^0$//; s/^\(.\+\)$/ (\1 info)/')"
    else
        notok "deb $a: lintian: no error, no warning" "$(echo "$ew" | head -n 6 | tr '\n' ' ')"
    fi
done

# Every override has a comment that says why, right above it.
ov=edge/packaging/debian/lintian-overrides
if [ -f "$ov" ]; then
    bare=$(awk '/^[^#[:space:]]/ && prev !~ /^#/ { print } { prev = $0 }' "$ov")
    check "lintian overrides: each one has its reason above it" "without a reason: $bare" test -z "$bare"
fi

# Reproducible: the same tree, packed again, gives the same bytes.
# One architecture is enough: the packing is the same for both.
a=$(echo $built | cut -d' ' -f1)
{
    deb=$(echo "$B"/ems-edge_*_"$a".deb)
    sum1=$(sha256sum <"$deb")
    rm -f "$deb"
    if scripts/deb.sh --no-install --build-root "$B" "$a" >"$TMP/again.log" 2>&1 && [ "$(sha256sum <"$deb")" = "$sum1" ]; then
        ok "deb $a: packing the same tree again gives a byte-identical .deb"
    else
        notok "deb $a: packing the same tree again gives a byte-identical .deb" "$(tail -n 2 "$TMP/again.log" | tr '\n' ' ')"
    fi
}

# ---------------------------------------------------------------- install in an arm64 root
case " $built " in
    *" arm64 "*) ;;
    *) tap_status; exit ;;
esac
deb=$(echo "$B"/ems-edge_*_arm64.deb)
# The root holds minbase plus the package's Depends (first alternatives), as
# apt would install them; the cache key is the day and that list.
includes=$(dpkg-deb -f "$deb" Depends | tr ',' '\n' | sed 's/|.*//; s/(.*//; s/ //g' | sort | paste -sd,)
mirror=${EMS_DEBIAN_MIRROR:-$(apt-get indextargets --format '$(REPO_URI) $(RELEASE)' 2>/dev/null |
    awk '$2 == "bookworm" { print $1; exit }')}
mirror=${mirror:-http://deb.debian.org/debian/}
CACHE=$ROOT/build/debroot
key=bookworm-arm64-$(date -u +%Y%m%d)-$(md5sum <<<"$includes" | cut -c1-8)
tarball=$CACHE/$key.tar
mkdir -p "$CACHE"

in_root() { # runs a command in the root as (fake) root, under qemu
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
        proot -q qemu-aarch64 -r "$R" -0 -w / -b /proc -b /dev -b /sys "$@" </dev/null 2>&1 |
        grep -v '^proot warning'
    return "${PIPESTATUS[0]}"
}

# Made in /tmp, not under build/: the Makefile includes every '*.d' in build/.
make_root() {
    local dir=$TMP/mkroot
    rm -f "$CACHE"/*.tar.tmp.* # left by a run that was killed while packing
    echo "# making $tarball (debootstrap from $mirror, then its second stage under qemu: about 3 minutes)"
    if ! debootstrap --foreign --variant=minbase --arch=arm64 --include="$includes" \
        bookworm "$dir" "$mirror" >"$TMP/debootstrap1.log" 2>&1; then
        root_skip="debootstrap could not fetch bookworm arm64 from $mirror: $(grep -E '^E:' "$TMP/debootstrap1.log" | head -n 2 | tr '\n' ' ')"
        return 1
    fi
    # The first stage may leave /proc as a link to the host's; proot binds it.
    rm -f "$dir/proc"
    mkdir -p "$dir/proc"
    if ! env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBOOTSTRAP_DIR=/debootstrap \
        proot -q qemu-aarch64 -r "$dir" -0 -w / -b /proc -b /dev -b /sys \
        /debootstrap/debootstrap --second-stage >"$TMP/debootstrap2.log" 2>&1; then
        root_fail="debootstrap --second-stage under proot: $(tail -n 3 "$TMP/debootstrap2.log" | tr '\n' ' ')"
        return 1
    fi
    rm -f "$dir"/var/cache/apt/archives/*.deb
    tar -C "$dir" -cf "$tarball.tmp.$$" . && mv "$tarball.tmp.$$" "$tarball"
    rm -rf "$dir"
    find "$CACHE" -name 'bookworm-arm64-*.tar' ! -name "$key.tar" -delete
}

root_skip="" root_fail=""
(
    flock 9 # one run makes the root; a parallel one waits for it
    [ -f "$tarball" ] || make_root
    # Report the reason to the outer shell through a file.
    printf '%s\n%s\n' "$root_skip" "$root_fail" >"$TMP/root.why"
) 9>"$CACHE/.lock"
root_skip=$(sed -n 1p "$TMP/root.why" 2>/dev/null)
root_fail=$(sed -n 2p "$TMP/root.why" 2>/dev/null)
if [ ! -f "$tarball" ]; then
    if [ -n "$root_fail" ]; then
        notok "deb arm64: an arm64 bookworm root to install into" "$root_fail"
    else
        skip "deb arm64: install, provision, upgrade, remove, purge in an arm64 bookworm root" "${root_skip:-no root}"
    fi
    tap_status
    exit
fi
R=$TMP/root
mkdir -p "$R"
tar -C "$R" -xf "$tarball"
cp "$deb" "$R/tmp/ems-edge.deb"

# A fresh install on a device that is not provisioned yet.
out=$(in_root dpkg -i /tmp/ems-edge.deb)
rc=$?
if [ $rc -eq 0 ]; then
    ok "deb arm64: dpkg -i in a bookworm arm64 root (minbase + Depends) succeeds"
else
    notok "deb arm64: dpkg -i in a bookworm arm64 root succeeds" "exit $rc: $(echo "$out" | tail -n 4 | tr '\n' ' ')"
fi
pw=$(awk -F: '$1 == "ems-edge"' "$R/etc/passwd")
uid=$(cut -d: -f3 <<<"$pw")
gid=$(awk -F: '$1 == "ems-edge" { print $3 }' "$R/etc/group")
members() { awk -F: -v g="$1" '$1 == g { print "," $4 "," }' "$R/etc/group"; }
if [ -n "$uid" ] && [ "$uid" -lt 1000 ] && [ "$(cut -d: -f6,7 <<<"$pw")" = /var/lib/ems-edge:/usr/sbin/nologin ] &&
    [[ "$(members gpio)" == *,ems-edge,* && "$(members i2c)" == *,ems-edge,* ]]; then
    ok "deb arm64: postinst creates system user ems-edge (no login, home /var/lib/ems-edge) in groups gpio and i2c"
else
    notok "deb arm64: postinst creates system user ems-edge in groups gpio and i2c" "passwd '$pw'; gpio '$(members gpio)'; i2c '$(members i2c)'"
fi
bad=""
st() { stat -c '%a %u:%g' "$R$1" 2>/dev/null || echo "missing"; }
[ "$(st /etc/ems)" = "750 0:$gid" ] || bad="$bad /etc/ems($(st /etc/ems))"
[ "$(st /etc/ems/ems-edge.conf)" = "640 0:$gid" ] || bad="$bad ems-edge.conf($(st /etc/ems/ems-edge.conf))"
[ "$(st /var/lib/ems-edge)" = "700 $uid:$gid" ] || bad="$bad /var/lib/ems-edge($(st /var/lib/ems-edge))"
[ "$(grep -c ems-edge "$R/var/lib/dpkg/statoverride" 2>/dev/null)" = 3 ] || bad="$bad statoverride: $(tr '\n' ' ' <"$R/var/lib/dpkg/statoverride")"
if [ -n "$gid" ] && [ -z "$bad" ]; then
    ok "deb arm64: /etc/ems root:ems-edge 0750, the config 0640, /var/lib/ems-edge ems-edge 0700 (dpkg-statoverride)"
else
    notok "deb arm64: owners and modes after postinst" "gid '$gid'$bad"
fi
wants=$R/etc/systemd/system/multi-user.target.wants/ems-edge.service
if [ ! -e "$wants" ] && [ ! -L "$wants" ] && [[ "$out" == *"not started"*"/etc/ems/ems-edge.conf is still the shipped example"* ]]; then
    ok "deb arm64: not provisioned: the service is not enabled, and postinst says what is missing"
else
    notok "deb arm64: not provisioned: the service is not enabled, and postinst says what is missing" "$(ls -l "$wants" 2>&1); $(echo "$out" | grep ems-edge: | head -n 2 | tr '\n' ' ')"
fi

v=$(in_root ems-edge --version)
check "deb arm64: the installed ems-edge --version runs in the root ($v)" "'$v'" \
    test "$v" = "$(qemu-aarch64 "$B/arm64/ems-edge" --version 2>&1)"
out=$(in_root ems-edge --config /etc/ems/ems-edge.conf --check)
rc=$?
if [ $rc -ne 0 ] && [[ "$out" == *"/etc/ems/device.token"* ]]; then
    ok "deb arm64: --check refuses the installed config while there is no token ($out)"
else
    notok "deb arm64: --check refuses the installed config while there is no token" "exit $rc: $out"
fi

# Provision: the token and CA, an edited config. --check accepts it.
openssl rand -hex 32 >"$R/etc/ems/device.token"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$TMP/ca.key" \
    -out "$TMP/ca.pem" -days 2 -subj "/CN=test CA" >/dev/null 2>&1
cp "$TMP/ca.pem" "$R/etc/ems/ca.pem"
chown "0:$gid" "$R/etc/ems/device.token" "$R/etc/ems/ca.pem"
chmod 0640 "$R/etc/ems/device.token" "$R/etc/ems/ca.pem"
sed -i -e 's/^device_id = .*/device_id = pi_deb_test/' -e 's#^cloud_url = .*#cloud_url = wss://localhost:1#' \
    "$R/etc/ems/ems-edge.conf"
sum=$(md5sum <"$R/etc/ems/ems-edge.conf")
out=$(in_root ems-edge --config /etc/ems/ems-edge.conf --check)
check "deb arm64: --check accepts the installed config once provisioned" "$out" \
    test "$out" = "ems-edge: configuration OK"

# An upgrade (the same package again) keeps the edited conffile and the
# administrator's choice (still not enabled).
out=$(in_root dpkg -i /tmp/ems-edge.deb)
rc=$?
if [ $rc -eq 0 ] && [ "$(md5sum <"$R/etc/ems/ems-edge.conf")" = "$sum" ] && [ ! -L "$wants" ] &&
    [ "$(st /etc/ems/ems-edge.conf)" = "640 0:$gid" ]; then
    ok "deb arm64: an upgrade keeps the edited configuration, its owner and the service's state"
else
    notok "deb arm64: an upgrade keeps the edited configuration" "exit $rc; $(st /etc/ems/ems-edge.conf); $(echo "$out" | tail -n 2 | tr '\n' ' ')"
fi

# remove: the program goes; configuration, token, buffer and user stay, and
# so does the administrator's `systemctl enable` (made here by hand: there
# is no systemd in the root), so a reinstall comes back enabled.
echo "buffered" >"$R/var/lib/ems-edge/buffer"
ln -sfn /lib/systemd/system/ems-edge.service "$wants"
out=$(in_root dpkg -r ems-edge)
rc=$?
if [ $rc -eq 0 ] && [ ! -e "$R/usr/bin/ems-edge" ] && [ ! -e "$R/lib/systemd/system/ems-edge.service" ] &&
    [ -f "$R/etc/ems/ems-edge.conf" ] && [ -f "$R/etc/ems/device.token" ] && [ -f "$R/var/lib/ems-edge/buffer" ] &&
    [ "$(readlink "$R/etc/systemd/system/ems-edge.service")" = /dev/null ]; then
    ok "deb arm64: dpkg -r removes the program, masks the unit, keeps configuration, token and buffer"
else
    notok "deb arm64: dpkg -r removes the program, masks the unit, keeps configuration, token and buffer" "exit $rc: $(ls -l "$R/etc/systemd/system/ems-edge.service" 2>&1); $(echo "$out" | tail -n 2 | tr '\n' ' ')"
fi
out=$(in_root dpkg -i /tmp/ems-edge.deb)
rc=$?
if [ $rc -eq 0 ] && [ -L "$wants" ] && [ ! -L "$R/etc/systemd/system/ems-edge.service" ] &&
    [ "$(md5sum <"$R/etc/ems/ems-edge.conf")" = "$sum" ]; then
    ok "deb arm64: reinstalled after dpkg -r: unmasked, still enabled, configuration as it was"
else
    notok "deb arm64: reinstalled after dpkg -r: unmasked, still enabled, configuration as it was" "exit $rc; $(ls -l "$wants" "$R/etc/systemd/system/ems-edge.service" 2>&1 | tr '\n' ' '); $(echo "$out" | tail -n 2 | tr '\n' ' ')"
fi
# purge: configuration, token, CA, buffer and statoverrides go; the user stays.
out=$(in_root dpkg --purge ems-edge)
rc=$?
left=$(ls -d "$R/etc/ems" "$R/var/lib/ems-edge" 2>/dev/null | tr '\n' ' ')
if [ $rc -eq 0 ] && [ -z "$left" ] && ! grep -qs ems-edge "$R/var/lib/dpkg/statoverride" &&
    grep -q '^ems-edge:' "$R/etc/passwd" && [ -z "$(find "$R/etc/systemd" -name 'ems-edge*' 2>/dev/null)" ]; then
    ok "deb arm64: dpkg --purge deletes /etc/ems, /var/lib/ems-edge, the statoverrides and unit links; keeps the system user"
else
    notok "deb arm64: dpkg --purge cleans up" "exit $rc; left: $left; $(grep ems-edge "$R/var/lib/dpkg/statoverride" 2>/dev/null | tr '\n' ' '); $(find "$R/etc/systemd" -name 'ems-edge*' 2>/dev/null | tr '\n' ' '); $(echo "$out" | tail -n 2 | tr '\n' ' ')"
fi

# A fresh install on a provisioned device (an image made with the token and
# the config in place, the config kept with --force-confold): enabled.
mkdir -p "$R/etc/ems"
openssl rand -hex 32 >"$R/etc/ems/device.token"
cp "$TMP/ca.pem" "$R/etc/ems/ca.pem"
cp "$TMP/x-arm64/etc/ems/ems-edge.conf" "$R/etc/ems/ems-edge.conf"
sed -i -e 's/^device_id = .*/device_id = pi_deb_test/' -e 's#^cloud_url = .*#cloud_url = wss://localhost:1#' \
    "$R/etc/ems/ems-edge.conf"
out=$(in_root dpkg -i --force-confold /tmp/ems-edge.deb)
rc=$?
if [ $rc -eq 0 ] && [ -L "$wants" ] && [[ "$out" != *"not started"* ]]; then
    ok "deb arm64: a first install on a provisioned device enables the service"
else
    notok "deb arm64: a first install on a provisioned device enables the service" "exit $rc; $(ls -l "$wants" 2>&1); $(echo "$out" | grep -E 'ems-edge:|error' | head -n 3 | tr '\n' ' ')"
fi

tap_status
