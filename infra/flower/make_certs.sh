#!/usr/bin/env bash
# Make the TLS certificates and SuperNode authentication keys for Flower's deployment engine,
# following Flower's "Enable TLS connections" and "Authenticate SuperNodes" guides:
#   a self-signed CA (ca.crt, ca.key), a SuperLink server certificate signed by it (server.pem,
#   server.key) whose subjectAltName covers localhost, 127.0.0.1, ::1 and any extra hosts given,
#   and one ECDSA P-384 key pair per SuperNode (client_credentials_<i>, client_credentials_<i>.pub).
#
# usage: infra/flower/make_certs.sh OUT_DIR [NUM_SUPERNODES=3] [EXTRA_SAN...]
#   EXTRA_SAN: DNS names or IP addresses the SuperLink is also reached by (e.g. superlink.internal 10.0.0.5)
# then set federated.tls_ca_cert=OUT_DIR/ca.crt, tls_server_cert=OUT_DIR/server.pem,
# tls_server_key=OUT_DIR/server.key and (optionally) supernode_auth_dir=OUT_DIR.
set -euo pipefail

out="${1:?usage: make_certs.sh OUT_DIR [NUM_SUPERNODES] [EXTRA_SAN...]}"
num="${2:-3}"
shift $(( $# >= 2 ? 2 : $# ))
days="${DAYS:-365}"
mkdir -p "$out"
umask 077  # private keys readable by the owner only

san="DNS.1 = localhost
IP.1 = 127.0.0.1
IP.2 = ::1"
d=2; i=3
for h in "$@"; do
  if [[ "$h" =~ ^[0-9.]+$ || "$h" == *:* ]]; then san+=$'\n'"IP.$i = $h"; i=$((i+1));
  else san+=$'\n'"DNS.$d = $h"; d=$((d+1)); fi
done

cat > "$out/certificate.conf" <<CONF
[req]
default_bits = 4096
prompt = no
default_md = sha256
req_extensions = req_ext
distinguished_name = dn

[dn]
O = driftloop
CN = localhost

[req_ext]
subjectAltName = @alt_names

[alt_names]
$san
CONF

openssl genrsa -out "$out/ca.key" 4096 2>/dev/null
openssl req -new -x509 -key "$out/ca.key" -sha256 -subj "/O=driftloop Flower CA" -days "$days" -out "$out/ca.crt"
openssl genrsa -out "$out/server.key" 4096 2>/dev/null
openssl req -new -key "$out/server.key" -out "$out/server.csr" -config "$out/certificate.conf"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -out "$out/server.pem" -days "$days" -sha256 -extfile "$out/certificate.conf" -extensions req_ext 2>/dev/null
rm -f "$out/server.csr"

for ((n = 0; n < num; n++)); do
  rm -f "$out/client_credentials_$n" "$out/client_credentials_$n.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "" -f "$out/client_credentials_$n"
done
chmod 644 "$out/ca.crt" "$out/server.pem" "$out"/client_credentials_*.pub
echo "wrote CA, server certificate and $num SuperNode key pairs to $out"
