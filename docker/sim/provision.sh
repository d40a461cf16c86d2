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
    if ! out=$(emsctl device add "$id" 2>&1); then
        echo "sim-provision: $id: 'emsctl device add' said: $out; rotating instead"
        out=$(emsctl device rotate "$id" 2>&1) || {
            echo "sim-provision: $id: 'emsctl device rotate' failed: $out" >&2
            exit 1
        }
    fi
    # The token is 64 hex characters (docs/protocol.md); emsctl prints it once.
    tok=$(printf '%s\n' "$out" | grep -oE '\b[0-9a-f]{64}\b' | head -n 1 || true)
    if [ -z "$tok" ]; then
        echo "sim-provision: $id: no token in the output of emsctl: $out" >&2
        exit 1
    fi
    printf '%s\n' "$tok" >"$f.tmp"
    mv "$f.tmp" "$f"
    echo "sim-provision: $id: registered"
done
