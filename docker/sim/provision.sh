#!/bin/sh
# sim/provision.sh DIR ID...: registers each simulated device with emsctl and
# leaves its token in DIR/ID.token for the sim-* services (compose profile
# "sim"). Runs in the DB writer image, where emsctl and the database login
# are. A token that is already there is kept, so a second `up` changes
# nothing; a device that exists without its token file (the volume was
# removed) gets a new token with `emsctl device rotate`.
set -eu
dir=$1
shift
umask 077
for id in "$@"; do
    f=$dir/$id.token
    if [ -s "$f" ]; then
        echo "sim-provision: $id: token present"
        continue
    fi
    # emsctl prints the token alone on stdout, its messages on stderr.
    if ! tok=$(emsctl device add "$id"); then
        echo "sim-provision: $id: not added; giving it a new token instead"
        tok=$(emsctl device rotate "$id") || {
            echo "sim-provision: $id: 'emsctl device rotate' failed" >&2
            exit 1
        }
    fi
    case "$tok" in
        *[!0-9a-f]*|"") echo "sim-provision: $id: emsctl printed no token" >&2; exit 1 ;;
    esac
    if [ ${#tok} -ne 64 ]; then
        echo "sim-provision: $id: emsctl printed no token" >&2
        exit 1
    fi
    printf '%s\n' "$tok" >"$f.tmp"
    mv "$f.tmp" "$f"
    echo "sim-provision: $id: registered"
done
