#!/bin/sh
# docker/init-secrets.sh [PUBLIC_HOST...]: makes docker/secrets/ (or
# $EMS_SECRETS_DIR) for the compose setup. Run it once from anywhere; it never
# overwrites a file that exists, so a second run only fills in what is missing
# (delete a file to renew it).
#
#   pg_superuser_password  the PostgreSQL superuser "postgres" (db container only)
#   pg_ems_password        role "ems": the DB writer and emsctl
#   pg_reader_password     role "ems_reader": read-only, for Grafana
#   grafana_admin_password Grafana's "admin" user (profile monitoring)
#   session_key            the gateways' shared HMAC key for session cookies
#   ca.crt, ca.key         a private CA (keep ca.key offline in production)
#   tls.crt, tls.key       the gateway's certificate, signed by that CA, for
#                          PUBLIC_HOST... plus "gateway" and "localhost" (the
#                          names used inside the compose network)
#
# For a public server you may use a certificate from your own CA or from ACME
# instead: put it in tls.crt / tls.key and give the edges the CA that signed
# it (docs/deploy-cloud.md, "TLS certificates").
#
# Permissions: the directory is 0700 (only root/you on the host). Compose
# bind-mounts each file secret with its host owner and mode (the uid/gid/mode
# of a long-syntax secret are ignored without swarm), so each secret belongs
# to the container user that reads it and nobody else can read it:
#   session_key, tls.key           0600 uid 10001 (ems: gateway)
#   pg_ems_password                0640 uid 10001, gid 70 (DB writer, emsctl;
#                                  the database's init script as postgres)
#   pg_superuser_password          0600 uid 70 (postgres in the database image)
#   pg_reader_password             0640 uid 472, gid 70 (grafana; database)
#   grafana_admin_password         0600 uid 472 (grafana)
#   ca.key                         0600, yours (no container reads it)
#   ca.crt, tls.crt                0644 (public)
# Setting owners needs root: run it with sudo. Run as another user it leaves
# the secrets 0644 (the containers could not read them otherwise) and says so.
set -eu

# EMS_SECRETS_DIR as in the compose file: relative paths are relative to docker/.
cd "$(dirname "$0")"
DIR=${EMS_SECRETS_DIR:-./secrets}
umask 077
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
chmod 700 "$DIR"
cd "$DIR"

hosts="$*"
[ -n "$hosts" ] || hosts=$(hostname -f 2>/dev/null || hostname)

made=""
secret() { # NAME BYTES: random hex
    [ -s "$1" ] && return 0
    openssl rand -hex "$2" >"$1.tmp" && mv "$1.tmp" "$1"
    made="$made $1"
}
secret pg_superuser_password 24
secret pg_ems_password 24
secret pg_reader_password 24
secret grafana_admin_password 16
secret session_key 32

if [ ! -s ca.key ] || [ ! -s ca.crt ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout ca.key -out ca.crt -days 3650 -subj "/CN=ems private CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    made="$made ca.crt ca.key"
    rm -f tls.crt tls.key # a new CA invalidates the old server certificate
fi

if [ ! -s tls.key ] || [ ! -s tls.crt ]; then
    # An address goes in twice: as IP (browsers, curl, OpenSSL) and as DNS
    # text, because mbedTLS 2.28 (the edges' TLS library) matches a host
    # given as an address only against DNS entries (Mbed-TLS issue 5082).
    # Prefer a DNS name for cloud_url anyway.
    san="DNS:gateway,DNS:localhost,IP:127.0.0.1,DNS:127.0.0.1"
    for h in $hosts; do
        case "$h" in
            *[!0-9.]*) case "$h" in *:*) san="$san,IP:$h" ;; *) san="$san,DNS:$h" ;; esac ;;
            *) san="$san,IP:$h,DNS:$h" ;;
        esac
    done
    first=${hosts%% *}
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout tls.key -out tls.csr -subj "/CN=$first" 2>/dev/null
    printf '%s\n' "subjectAltName=$san" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >tls.ext
    openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
        -out tls.crt -days 825 -extfile tls.ext 2>/dev/null
    rm -f tls.csr tls.ext ca.srl
    made="$made tls.crt tls.key (for $san)"
fi

# Each secret readable only by the container user that needs it (see the
# table above); certificates are public. Applied on every run, so running it
# again (with sudo) repairs the modes of an older secrets directory.
chmod 644 ca.crt tls.crt
chmod 600 ca.key
own() { # MODE UID[:GID] FILE...
    mode=$1 owner=$2
    shift 2
    chown "$owner" "$@" && chmod "$mode" "$@"
}
if [ "$(id -u)" = 0 ]; then
    own 600 10001:10001 session_key tls.key
    own 640 10001:70 pg_ems_password
    own 600 70:70 pg_superuser_password
    own 640 472:70 pg_reader_password
    own 600 472:472 grafana_admin_password
else
    chmod 644 pg_superuser_password pg_ems_password pg_reader_password \
        grafana_admin_password session_key tls.key
    echo "init-secrets: not root: the secrets stay 0644 so that the containers can" \
        "read them; run 'sudo $0' to give each to its container user with mode 0600/0640" >&2
fi

if [ -n "$made" ]; then
    echo "init-secrets: made$made"
else
    echo "init-secrets: $DIR is complete; nothing made"
fi
echo "init-secrets: the edges need $DIR/ca.crt (docs/deploy-edge.md)"
