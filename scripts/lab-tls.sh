#!/usr/bin/env bash
# Lab and tests only: a throwaway CA and a Kafka broker certificate it signed for the given IP addresses, for the
# SCRAM-over-TLS listeners of the Kafka lab (role kafka_lab) and tests/kafka_mm2. Writes into DIR:
#   ca.pem           the CA (PEM: kafka-python, the rollback modules and the readiness exporter)
#   server.p12       the brokers' key and chain (PKCS12, password STORE_PASSWORD)
#   truststore.p12   the CA as a trusted entry (PKCS12, password STORE_PASSWORD: MirrorMaker 2)
# Idempotent: kept while its addresses are the same, made anew otherwise.
#   scripts/lab-tls.sh DIR ADDRESS...
set -euo pipefail
source "$(dirname "$0")/lib.sh"

STORE_PASSWORD=lab-store-pass
(($# >= 2)) || die "usage: $0 DIR ADDRESS..."
dir=$1
shift
san=$(printf 'IP:%s,' "$@")
san=${san%,}
mkdir -p "$dir"
if [[ -s $dir/truststore.p12 && "$(cat "$dir/san.txt" 2>/dev/null)" == "$san" ]]; then
  exit 0
fi
rm -f "$dir"/{ca.key,ca.pem,ca.srl,server.key,server.csr,server.pem,server.p12,truststore.p12,san.txt}
quiet() { "$@" >/dev/null 2>&1 || { "$@" >&2; die "$1 failed"; }; }
quiet openssl req -x509 -newkey rsa:2048 -nodes -days 7 -subj /CN=infra-obs-lab-ca \
  -keyout "$dir/ca.key" -out "$dir/ca.pem"
quiet openssl req -newkey rsa:2048 -nodes -subj "/CN=$1" -keyout "$dir/server.key" -out "$dir/server.csr"
quiet openssl x509 -req -days 7 -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -extfile <(printf 'subjectAltName = %s\n' "$san") -out "$dir/server.pem"
quiet openssl pkcs12 -export -name kafka -in "$dir/server.pem" -inkey "$dir/server.key" -certfile "$dir/ca.pem" \
  -passout "pass:$STORE_PASSWORD" -out "$dir/server.p12"
quiet keytool -importcert -noprompt -alias lab-ca -file "$dir/ca.pem" -storetype PKCS12 \
  -keystore "$dir/truststore.p12" -storepass "$STORE_PASSWORD"
printf '%s' "$san" >"$dir/san.txt"
log "CA and broker certificate for $san in $dir"
