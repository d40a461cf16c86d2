#!/usr/bin/env bash
# scripts/deb.sh [--no-install] [--build-root DIR] [ARCH...]
#
# Builds the Debian package of ems-edge for Raspberry Pi OS / Debian 12
# (bookworm): DIR/ems-edge_<version>_<ARCH>.deb, ARCH arm64 and/or armhf
# (default both; DIR defaults to build). `make deb-arm64`, `make deb-armhf`.
#
#   scripts/deb.sh arm64                  -> build/ems-edge_0.1.0-1_arm64.deb
#   scripts/deb.sh --build-root D armhf   -> D/ems-edge_..._armhf.deb (tests)
#   scripts/deb.sh --no-install           -> fail instead of installing the toolchain
#
# The binary comes from scripts/cross.sh (same build root, so DIR/ARCH/ems-edge),
# which also proves that it starts under qemu. The package is put together
# by hand with dpkg-deb, the way debhelper would:
#   /usr/bin/ems-edge                     stripped (the unstripped one stays in DIR/ARCH)
#   /lib/systemd/system/ems-edge.service  edge/packaging/ems-edge.service, ExecStart in /usr/bin
#   /usr/lib/sysusers.d/ems-edge.conf     edge/packaging/ems-edge.sysusers
#   /lib/udev/rules.d/99-ems-edge.rules   edge/packaging/99-ems-edge.rules
#   /etc/ems/ems-edge.conf                edge/ems-edge.conf.example, a conffile
#   /var/lib/ems-edge/                    the state directory
#   /usr/share/man/man8/ems-edge.8.gz     options taken from `ems-edge --help`
#   /usr/share/doc/ems-edge/              copyright, changelog.Debian.gz, README.Debian
# with the maintainer scripts, control file and lintian overrides of
# edge/packaging/debian/. Depends: dpkg-shlibdeps on the binary (the :ARCH
# libraries are installed with the toolchain), plus adduser and
# init-system-helpers for the maintainer scripts.
#
# Version: the firmware string the binary prints (`ems-edge --version`,
# EMS_EDGE_FIRMWARE in edge/daemon.h) is the upstream version; the newest
# entry of edge/packaging/debian/changelog must be for it and gives the
# Debian revision (0.1.0-1). A new firmware version needs a changelog entry
# first: the script stops and says so. File dates and the archive are set
# from that entry's date, so the same tree gives the same .deb.
set -euo pipefail
umask 022

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
P=edge/packaging
D=$P/debian

noinstall=()
build_root=build
archs=()
while [ $# -gt 0 ]; do
    case "$1" in
        --no-install) noinstall=(--no-install) ;;
        --build-root) build_root=${2:?--build-root needs a directory}; shift ;;
        --build-root=*) build_root=${1#*=} ;;
        arm64|armhf) archs+=("$1") ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "deb: unknown argument '$1' (try --help)" >&2; exit 2 ;;
    esac
    shift
done
[ ${#archs[@]} -gt 0 ] || archs=(arm64 armhf)

die() { echo "deb: $*" >&2; exit 1; }

# shellcheck source=lib/arch.sh
. "$ROOT/scripts/lib/arch.sh"

# The newest changelog entry: "ems-edge (0.1.0-1) bookworm; urgency=medium"
# and its trailer " -- NAME <MAIL>  DATE".
cl_version=$(sed -n '1s/^ems-edge (\([^)]*\)).*/\1/p' "$D/changelog")
cl_trailer=$(grep -m 1 '^ -- ' "$D/changelog")
maintainer=$(sed 's/^ -- \(.*>\)  .*/\1/' <<<"$cl_trailer")
cl_date=$(sed 's/^ -- .*>  //' <<<"$cl_trailer")
[ -n "$cl_version" ] && [ -n "$maintainer" ] && [ -n "$cl_date" ] ||
    die "cannot read the newest entry of $D/changelog"
SOURCE_DATE_EPOCH=$(date -d "$cl_date" +%s) || die "bad date in $D/changelog: $cl_date"
export SOURCE_DATE_EPOCH

# `ems-edge --help` as the man page's OPTIONS section: one .TP per option
# line ("  -c, --config FILE     text"); anything else becomes a paragraph.
# The text column is where most option lines put it, so a long flag that
# leaves only one blank before its text is still split right.
help_to_roff() {
    awk '
        function esc(s) { gsub(/\\/, "\\e", s); gsub(/-/, "\\-", s); return s }
        function flags(s,   n, i, w, out) {
            n = split(s, w, " ")
            for (i = 1; i <= n; i++) {
                out = out (i > 1 ? " " : "") (w[i] ~ /^-/ ? "\\fB" esc(w[i]) "\\fR" : "\\fI" esc(w[i]) "\\fR")
            }
            return out
        }
        { line[NR] = $0 }
        /^ +-/ && match($0, /[^ ]  +[^ ]/) { col[RSTART + RLENGTH - 1]++ }
        END {
            for (c in col) if (col[c] > best) { best = col[c]; at = c + 0 }
            for (i = 1; i <= NR; i++) {
                l = line[i]
                if (i == 1 && l ~ /^usage:/) continue
                if (l ~ /^ +-/) {
                    if (at && length(l) >= at && substr(l, at - 1, 1) == " ") {
                        f = substr(l, 1, at - 1); t = substr(l, at)
                    } else { f = l; t = "" }
                    sub(/^ +/, "", f); sub(/ +$/, "", f); sub(/^ +/, "", t)
                    print ".TP"; print flags(f); if (t != "") print esc(t)
                } else if (l ~ /^ +[^ ]/) {
                    sub(/^ +/, "", l); print esc(l)
                } else if (l ~ /[^ ]/) {
                    print ".PP"; print esc(l)
                }
            }
        }
    '
}

build_deb() {
    local a=$1 t q bin fw upstream version w r deb tool
    for tool in dpkg-deb dpkg-shlibdeps; do
        command -v "$tool" >/dev/null || die "$tool is missing: apt-get install dpkg-dev (scripts/deps.sh installs it)"
    done
    t=$(triple_of "$a")
    q=$(qemu_of "$a")
    bin=$build_root/$a/ems-edge

    fw=$("$q" "$bin" --version) || die "$q $bin --version failed"
    upstream=${fw#ems-edge }
    [[ "$fw" == "ems-edge "* && "$upstream" =~ ^[0-9][A-Za-z0-9.+~]*$ ]] ||
        die "unexpected firmware string '$fw' (want 'ems-edge X.Y.Z')"
    [ "${cl_version%-*}" = "$upstream" ] ||
        die "the binary is $upstream but the newest entry of $D/changelog is $cl_version: add an entry for $upstream-1 there first"
    version=$cl_version

    # Staged outside the build root: the Makefile includes every '*.d' under
    # it, and a staged sysusers.d or rules.d directory would stop make.
    w=$(mktemp -d "${TMPDIR:-/tmp}/ems-deb-$a.XXXXXX")
    # shellcheck disable=SC2064 # $w is expanded now on purpose: it is local
    trap "rm -rf '$w'" EXIT # build_deb runs in a subshell
    r=$w/debian/ems-edge
    mkdir -p "$r/DEBIAN"

    install -D -m 0755 "$bin" "$r/usr/bin/ems-edge"
    # As dh_strip does: no debug sections, no .comment or .note.
    "$t-strip" --remove-section=.comment --remove-section=.note --strip-unneeded "$r/usr/bin/ems-edge"

    install -d "$r/lib/systemd/system"
    sed 's#/usr/local/bin/ems-edge#/usr/bin/ems-edge#g' "$P/ems-edge.service" >"$r/lib/systemd/system/ems-edge.service"
    grep -q '^ExecStart=/usr/bin/ems-edge ' "$r/lib/systemd/system/ems-edge.service" ||
        die "$P/ems-edge.service: ExecStart does not run /usr/local/bin/ems-edge any more; update scripts/deb.sh"
    install -D -m 0644 "$P/ems-edge.sysusers" "$r/usr/lib/sysusers.d/ems-edge.conf"
    install -D -m 0644 "$P/99-ems-edge.rules" "$r/lib/udev/rules.d/99-ems-edge.rules"
    # The example is the live configuration: the unit reads this path, and as
    # a conffile dpkg keeps the administrator's edits over upgrades.
    install -D -m 0644 edge/ems-edge.conf.example "$r/etc/ems/ems-edge.conf"
    install -d "$r/var/lib/ems-edge"

    local doc=$r/usr/share/doc/ems-edge
    install -D -m 0644 "$D/copyright" "$doc/copyright"
    install -m 0644 "$D/README.Debian" "$doc/README.Debian"
    gzip -9n <"$D/changelog" >"$doc/changelog.Debian.gz"

    local help man=$r/usr/share/man/man8
    # The help names the example by its place in the source tree; the
    # package installs it as the live configuration.
    help=$("$q" "$bin" --help | sed 's#edge/ems-edge\.conf\.example#/etc/ems/ems-edge.conf#g') ||
        die "$q $bin --help failed"
    install -d "$man"
    {
        sed -n '/@OPTIONS@/q;p' "$D/ems-edge.8.in"
        help_to_roff <<<"$help"
        sed -n '/@OPTIONS@/,$p' "$D/ems-edge.8.in" | tail -n +2
    } | sed -e "s/@VERSION@/$version/g" -e "s/@DATE@/$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)/g" |
        gzip -9n >"$man/ems-edge.8.gz"

    if [ -f "$D/lintian-overrides" ]; then
        install -D -m 0644 "$D/lintian-overrides" "$r/usr/share/lintian/overrides/ems-edge"
    fi

    # Depends of the binary, from the shlibs/symbols files of the :ARCH
    # libraries. dpkg-shlibdeps wants a debian/control beside the package.
    printf 'Source: ems-edge\n\nPackage: ems-edge\nArchitecture: %s\n' "$a" >"$w/debian/control"
    local shlibs
    shlibs=$(cd "$w" && DEB_HOST_ARCH=$a DEB_HOST_MULTIARCH=$t dpkg-shlibdeps -O -e debian/ems-edge/usr/bin/ems-edge) ||
        die "dpkg-shlibdeps failed for $a"
    shlibs=${shlibs#shlibs:Depends=}
    [ -n "$shlibs" ] || die "dpkg-shlibdeps found no dependency for $a"

    install -m 0755 "$D/postinst" "$D/prerm" "$D/postrm" "$r/DEBIAN/"
    install -m 0644 "$D/conffiles" "$r/DEBIAN/conffiles"
    # md5sums of every file but the conffiles (dpkg tracks those itself).
    (cd "$r" && find . -type f ! -path './DEBIAN/*' -printf '%P\n' | LC_ALL=C sort |
        grep -vxF -f <(sed 's#^/##' DEBIAN/conffiles) | xargs -r md5sum) >"$r/DEBIAN/md5sums"
    chmod 0644 "$r/DEBIAN/md5sums"

    # Installed-Size as dpkg-gencontrol counts it: KiB per file rounded up,
    # one per directory or link.
    local size
    size=$(cd "$r" && find . ! -path './DEBIAN*' ! -path . -printf '%y %s\n' |
        awk '$1 == "f" { k += int(($2 + 1023) / 1024) } $1 != "f" { k += 1 } END { print k }')
    sed -e "s|@VERSION@|$version|" -e "s|@ARCH@|$a|" -e "s|@MAINTAINER@|$maintainer|" \
        -e "s|@INSTALLED_SIZE@|$size|" -e "s|@SHLIBS_DEPENDS@|$shlibs|" "$D/control.in" >"$r/DEBIAN/control"
    if grep -q '@[A-Z_]*@' "$r/DEBIAN/control"; then
        die "unfilled field in the control file: $(grep '@[A-Z_]*@' "$r/DEBIAN/control")"
    fi

    find "$r" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    deb=$build_root/ems-edge_${version}_$a.deb
    dpkg-deb --root-owner-group -Zxz --build "$r" "$deb" >/dev/null
    echo "deb: $deb (Depends: adduser, init-system-helpers, $shlibs)"
}

rc=0
for a in "${archs[@]}"; do
    if ! scripts/cross.sh "${noinstall[@]}" --build-root "$build_root" "$a"; then
        echo "deb: $a FAILED (the cross build, above)" >&2
        rc=1
        continue
    fi
    if ! (build_deb "$a"); then
        echo "deb: $a FAILED" >&2
        rc=1
    fi
done
exit $rc
