#!/usr/bin/env bash
# The demo: the model owner's whole flow on a real OpenVINO model, end to end, on this machine.
# Installs what is missing (idempotent), builds ovsatool, and runs in target/demo/.
#
#   ISV keystore -> protect a real IR model -> license policy -> TCB reference from a live
#   (software) TPM's PCRs -> sell a customer license + service registration -> verify every
#   artifact -> owner-side decrypt -> OpenVINO inference on original and decrypted model are
#   identical -> a tampered package is refused.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh --openvino
export TSS2_LOG=all+none
echo "== building ovsatool (release)"
cargo build --release --locked -q -p ovsatool
T="$ROOT/target/release/ovsatool"
PY="$ROOT/.venv/bin/python"
W="$ROOT/target/demo"
rm -rf "$W" && mkdir -p "$W" && cd "$W"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Identities: the ISV, the customer, and the license service's TLS key (pinned in licenses)"
"$T" keygen --keystore isv.ks --subject "CN=Acme Models, O=Acme"
"$T" keygen --keystore customer.ks --subject "CN=Customer One, O=Example Corp"
"$T" keygen --keystore license-server.ks --subject "CN=license.acme.local"

step "2. A real OpenVINO IR model (CNN classifier, ~4 MiB of weights)"
"$PY" "$ROOT/examples/models/make_model.py" model --weights-mib 4

step "3. Protect it: package (.dat) + master license (.masterlic)"
"$T" protect --keystore isv.ks --name demo-cnn --version 1 --description "demo classifier" \
  --out demo-cnn.dat --master-license demo-cnn.masterlic model/model.xml model/model.bin
"$T" inspect demo-cnn.dat | head -n 12

step "4. License policy: 30 days from first use, 1000 loads, 2 machines, re-check every 10 min"
"$T" licgen --keystore isv.ks --out 30day.config --name "30-day trial" --days 30 \
  --usage-limit 1000 --instance-limit 2 --lease 600 \
  --server https://127.0.0.1:8443 --server-cert license-server.ks.crt >/dev/null
"$T" inspect 30day.config | sed -n '/"policy"/,/}$/p' | head -n 12

step "5. TCB reference from a live TPM (swtpm on loopback, PCRs read with tpm2_pcrread)"
PORT=$(( 20000 + RANDOM % 20000 ))
mkdir -p tpm
swtpm socket --tpm2 --server type=tcp,port=$PORT,bindaddr=127.0.0.1 \
  --ctrl type=tcp,port=$((PORT + 1)),bindaddr=127.0.0.1 --tpmstate dir="$W/tpm" \
  --flags not-need-init,startup-clear --pid file="$W/tpm/pid" -d  # absolute paths: -d changes directory
trap 'swtpm_ioctl --tcp 127.0.0.1:$((PORT + 1)) -s >/dev/null 2>&1 || true' EXIT
tpm2_pcrread -T "swtpm:host=127.0.0.1,port=$PORT" sha256:0,1,2,3,4,5,6,7 > pcrs.txt
"$T" tcb --keystore isv.ks --out vm.tcb --name demo-vm --vtpm-pcrs-file pcrs.txt >/dev/null
echo "vm.tcb: $(grep -c '"index"' vm.tcb) PCRs of the sha256 bank"

step "6. Sell a license to the customer"
"$T" sale --keystore isv.ks --master-license demo-cnn.masterlic --config 30day.config --tcb vm.tcb \
  --customer-cert customer.ks.crt --out demo-cnn.lic --registration demo-cnn.reg

step "7. Every artifact verifies"
for f in demo-cnn.dat demo-cnn.masterlic 30day.config vm.tcb demo-cnn.lic demo-cnn.reg; do
  "$T" inspect "$f" >/dev/null && echo "  $f: verified"
done
echo "  (demo-cnn.reg holds the license service's key share: inspect prints it redacted)"

step "8. Owner-side recovery: decrypt, byte-identical, and OpenVINO gives identical outputs"
"$T" decrypt --keystore isv.ks --master-license demo-cnn.masterlic --package demo-cnn.dat --out-dir recovered
cmp model/model.xml recovered/model.xml && cmp model/model.bin recovered/model.bin && echo "byte-identical"
"$PY" "$ROOT/examples/models/infer.py" model/model.xml --compare recovered/model.xml

step "9. Tampering is refused, with no plaintext released"
cp demo-cnn.dat tampered.dat
printf '\x00' | dd of=tampered.dat bs=1 seek=$(( $(stat -c %s tampered.dat) - 4096 )) conv=notrunc 2>/dev/null
if "$T" decrypt --keystore isv.ks --master-license demo-cnn.masterlic --package tampered.dat --out-dir t-out; then
  echo "ERROR: tampered package accepted"; exit 1
fi
test ! -e t-out/model.bin && echo "refused; nothing written"

step "Done. Artifacts are in $W"
