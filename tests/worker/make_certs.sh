#!/usr/bin/env bash
# tests/worker/make_certs.sh DIR — test certificates, made fresh by tls_test (openssl):
#   ca.pem, ca.key            a CA
#   server.pem, server.key    signed by it, for 127.0.0.1 and localhost
#   client.pem, client.key    signed by it
#   expired.pem, expired.key  signed by it, valid only in 2020
#   other-ca.pem, other.pem, other.key   a second CA and a client certificate it signed
set -euo pipefail
dir="$1"
mkdir -p "${dir}"
cd "${dir}"
ossl() { openssl "$@" 2>/dev/null; }
ca() {  # ca NAME
  ossl req -x509 -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.pem" -days 2 \
    -subj "/CN=ternps test $1"
}
leaf() {  # leaf NAME CA [ca-args...]: a key and a certificate signed by CA
  local name="$1" signer="$2"
  shift 2
  ossl req -newkey rsa:2048 -nodes -keyout "${name}.key" -out "${name}.csr" \
    -subj "/CN=ternps test ${name}"
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n' > "${name}.ext"
  ossl x509 -req -in "${name}.csr" -CA "${signer}.pem" -CAkey "${signer}.key" -CAcreateserial \
    -extfile "${name}.ext" -out "${name}.pem" "$@"
}
ca ca
ca other-ca
leaf server ca -days 2
leaf client ca -days 2
leaf other other-ca -days 2
# An expired client certificate: `openssl ca` takes explicit dates.
mkdir -p db && : > db/index.txt && echo 1000 > db/serial
cat > expired.cnf <<CNF
[ca]
default_ca = test
[test]
dir = db
database = db/index.txt
serial = db/serial
new_certs_dir = db
default_md = sha256
policy = anything
copy_extensions = none
[anything]
commonName = supplied
CNF
ossl req -newkey rsa:2048 -nodes -keyout expired.key -out expired.csr -subj "/CN=ternps test expired"
ossl ca -batch -config expired.cnf -cert ca.pem -keyfile ca.key -in expired.csr -out expired.pem \
  -startdate 20200101000000Z -enddate 20200102000000Z -notext
test -s expired.pem
