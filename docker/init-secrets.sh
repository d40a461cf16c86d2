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
# Permissions: the directory is 0700 (only root/you on the host); the files
# are 0644 inside it because the containers read them as different users
# (10001 for ems, 70 for postgres, 472 for grafana) and Docker bind-mounts
# file secrets with their host mode.
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

# Readable by the container users; the 0700 directory keeps them private.
chmod 644 pg_superuser_password pg_ems_password pg_reader_password \
    grafana_admin_password session_key ca.crt tls.crt tls.key
chmod 600 ca.key

if [ -n "$made" ]; then
    echo "init-secrets: made$made"
else
    echo "init-secrets: $DIR is complete; nothing made"
fi
echo "init-secrets: the edges need $DIR/ca.crt (docs/deploy-edge.md)"
