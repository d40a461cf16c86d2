#!/bin/sh
# mkcerts.sh DIR: makes throw-away certificates for the network tests.
#
#   DIR/ca.crt, ca.key             a test CA
#   DIR/server.crt, server.key     a server certificate from that CA for
#                                  DNS:localhost and IP:127.0.0.1 (CN localhost)
#   DIR/chain.crt                  server.crt followed by ca.crt
#   DIR/other-ca.crt, other-ca.key an unrelated CA (a client trusting only it
#                                  must refuse the server)
#   DIR/other-server.crt, .key     a server certificate from the other CA
#
# Keys are ECDSA P-256 (cheap handshakes). Valid for 30 days. Needs the
# openssl command line tool. Quiet unless something fails.
set -eu
dir=${1:?usage: mkcerts.sh DIR}
mkdir -p "$dir"
cd "$dir"

ca() { # name subject
    openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$1.key" -out "$1.crt" -days "${EMS_CERT_DAYS:-30}" -subj "$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

leaf() { # name ca subject san
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
        -keyout "$1.key" -out "$1.csr" -subj "$3" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$4" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial \
        -days "${EMS_CERT_DAYS:-30}" -out "$1.crt" -extfile "$1.ext" 2>/dev/null
    rm -f "$1.csr" "$1.ext"
}

ca ca "/CN=ems test CA"
ca other-ca "/CN=ems unrelated test CA"
leaf server ca "/CN=localhost" "DNS:localhost,IP:127.0.0.1"
leaf other-server other-ca "/CN=localhost" "DNS:localhost,IP:127.0.0.1"
cat server.crt ca.crt >chain.crt
