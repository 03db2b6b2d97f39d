#!/usr/bin/env bash
# The demo: the whole story on one machine, end to end, on embedded defaults.
# Installs what is missing (idempotent), builds what it needs (release), and runs in target/demo/.
#
#   Model owner: ISV keystore -> protect a generated IR model and a real pretrained ONNX model
#   (PP-OCRv4 text detector) -> license policy -> host TPM + VM vTPM
#   (swtpm, EK certificates from two private CAs) -> host quote stored in the vTPM -> TCB
#   reference from the live vTPM (+ the host PCRs its evidence carries) -> sell a customer
#   license + service registration -> verify every artifact -> owner-side decrypt -> a tampered
#   package is refused.
#   License service: ovsa-license-server on SQLite, the registration imported.
#   Customer: an OVMS config.json; examples/host-server loads the models through
#   libovsaruntime.so (TPM attestation, license check, decryption into OpenVINO's buffers),
#   runs OpenVINO inference, prints the result and the load-time breakdown, and checks the
#   outputs equal the plaintext model's; a revoked license is refused. Everything started is
#   stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh --openvino
export TSS2_LOG=all+none
echo "== building ovsatool, ovsa-license-server, libovsaruntime.so, ovsa-host-server (release)"
cargo build --release --locked -q -p ovsatool -p ovsa-license-server -p ovsaruntime -p ovsa-host-server
R="$ROOT/target/release"
T="$R/ovsatool"
LS="$R/ovsa-license-server"
PY="$ROOT/.venv/bin/python"
W="$ROOT/target/demo"
# Stop what an interrupted earlier run left (by the pids it recorded), then start afresh.
for pidfile in "$W"/tpm-host/pid "$W"/tpm-vm/pid "$W"/license-server.pid; do
  if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
done
rm -rf "$W" && mkdir -p "$W" && cd "$W"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port_pair() {  # a free TCP port P with P+1 also free, not in $*
  # Below the ephemeral range (32768+): swtpm cannot bind a port that has TIME_WAIT sockets.
  local p
  while :; do
    p=$(( 20000 + RANDOM % 12000 ))
    case " $* " in *" $p "*|*" $((p + 1)) "*|*" $((p - 1)) "*) continue ;; esac
    in_use "$p" || in_use $((p + 1)) || break
  done
  echo "$p"
}
HOST_PORT=$(free_port_pair)
VM_PORT=$(free_port_pair "$HOST_PORT")
LS_PORT=$(free_port_pair "$HOST_PORT" "$VM_PORT" $((HOST_PORT + 1)) $((VM_PORT + 1)))
HOST_TCTI="swtpm:host=127.0.0.1,port=$HOST_PORT"
VM_TCTI="swtpm:host=127.0.0.1,port=$VM_PORT"
cleanup() {
  if [ -f "$W/license-server.pid" ]; then kill "$(cat "$W/license-server.pid")" 2>/dev/null || true; fi
  swtpm_ioctl --tcp "127.0.0.1:$((HOST_PORT + 1))" -s >/dev/null 2>&1 || true
  swtpm_ioctl --tcp "127.0.0.1:$((VM_PORT + 1))" -s >/dev/null 2>&1 || true
}
trap cleanup EXIT

step "1. Identities: the ISV, the customer, the license service's TLS key (pinned in licenses) and its registration key (sold registrations are sealed to it)"
"$T" keygen --keystore isv.ks --subject "CN=Acme Models, O=Acme"
"$T" keygen --keystore customer.ks --subject "CN=Customer One, O=Example Corp"
"$T" keygen --keystore license-server.ks --subject "CN=license.acme.local"
"$T" keygen --keystore registration.ks --subject "CN=license.acme.local registration"

step "2. Two models: an OpenVINO IR CNN (~4 MiB of weights) and a real pretrained one (PP-OCRv4 text detector, ONNX)"
"$PY" "$ROOT/examples/models/make_model.py" model --weights-mib 4
# The detector ships in the PyPI package rapidocr-openvino; setup.sh --openvino extracted it.
mkdir -p det && cp "$ROOT/.venv/ppocr/ch_PP-OCRv4_det_infer.onnx" det/ppocr-det.onnx
echo "det/ppocr-det.onnx: $(stat -c %s det/ppocr-det.onnx) bytes"

step "3. Protect it: package (.dat) + master license (.masterlic)"
"$T" protect --keystore isv.ks --name demo-cnn --version 1 --description "demo classifier" \
  --out demo-cnn.dat --master-license demo-cnn.masterlic model/model.xml model/model.bin
"$T" inspect demo-cnn.dat | head -n 12
"$T" protect --keystore isv.ks --name ppocr-det --version 1 --description "PP-OCRv4 text detector" \
  --out ppocr-det.dat --master-license ppocr-det.masterlic det/ppocr-det.onnx

step "4. License policy: 30 days from first use, 1000 loads, 2 machines, re-check every 10 min"
"$T" licgen --keystore isv.ks --out 30day.config --name "30-day trial" --days 30 \
  --usage-limit 1000 --instance-limit 2 --lease 600 \
  --server "https://127.0.0.1:$LS_PORT" --server-cert license-server.ks.crt >/dev/null
"$T" inspect 30day.config | sed -n '/"policy"/,/}$/p' | head -n 12

step "5. The machine: a host TPM and the VM's vTPM (swtpm), EK certificates from two private CAs"
# As on a KVM host: the host's TPM (a swtpm standing in for the hardware TPM, certified by a
# "TPM vendor" CA) and one swtpm per VM (certified by the virtualization stack's CA).
tpm_provision() {  # STATE-DIR CA-DIR: a TPM with EK + platform certificates signed by the CA
  local tpm="$W/$1" ca="$W/$2"
  if [ ! -f "$ca/swtpm_setup.conf" ]; then
    mkdir -p "$ca"
    printf 'statedir = %s\nsigningkey = %s/signkey.pem\nissuercert = %s/issuercert.pem\ncertserial = %s/certserial\n' \
      "$ca" "$ca" "$ca" "$ca" > "$ca/swtpm-localca.conf"
    printf -- '--platform-manufacturer OVSA-Demo-%s\n--platform-version 2.1\n--platform-model swtpm\n' "$2" \
      > "$ca/swtpm-localca.options"
    printf 'create_certs_tool = /usr/bin/swtpm_localca\ncreate_certs_tool_config = %s/swtpm-localca.conf\ncreate_certs_tool_options = %s/swtpm-localca.options\nactive_pcr_banks = sha256\n' \
      "$ca" "$ca" > "$ca/swtpm_setup.conf"
  fi
  mkdir -p "$tpm"
  swtpm_setup --tpm2 --tpmstate "$tpm" --create-ek-cert --create-platform-cert --overwrite \
    --config "$ca/swtpm_setup.conf" >/dev/null
  cat "$ca/swtpm-localca-rootca-cert.pem" "$ca/issuercert.pem" > "$ca/chain.pem"
}
tpm_start() {  # STATE-DIR PORT (control port PORT+1)
  swtpm socket --tpm2 --server type=tcp,port="$2",bindaddr=127.0.0.1 \
    --ctrl type=tcp,port=$(($2 + 1)),bindaddr=127.0.0.1 --tpmstate dir="$W/$1" \
    --flags not-need-init,startup-clear --pid file="$W/$1/pid" -d  # absolute paths: -d changes directory
}
tpm_provision tpm-host ca-host
tpm_provision tpm-vm ca-vtpm
tpm_start tpm-host "$HOST_PORT"
tpm_start tpm-vm "$VM_PORT"
echo "host TPM: $HOST_TCTI (EK CA: ca-host/chain.pem)"
echo "VM vTPM:  $VM_TCTI (EK CA: ca-vtpm/chain.pem)"

step "6. Host admin, before the VM starts: quote the host TPM into the vTPM's NV (ovsatool host-quote)"
# The host AK lives in host-ak/ (TPM-wrapped); it is enrolled with the license service in step 12.
"$T" host-quote --host-tcti "$HOST_TCTI" --vtpm-tcti "$VM_TCTI" --ak-cache-dir host-ak

step "7. TCB reference from the live vTPM's PCRs and the host PCRs its evidence carries"
"$T" tcb --keystore isv.ks --out vm.tcb --name demo-vm --from-tpm "$VM_TCTI" --host-evidence >/dev/null
echo "vm.tcb: $(grep -c '"index"' vm.tcb) PCRs of the sha256 bank (vTPM 0-7, host 0-7)"

step "8. Sell a license to the customer"
"$T" sale --keystore isv.ks --master-license demo-cnn.masterlic --config 30day.config --tcb vm.tcb \
  --customer-cert customer.ks.crt --registration-cert registration.ks.crt \
  --out demo-cnn.lic --registration demo-cnn.reg | tee sale.txt
"$T" sale --keystore isv.ks --master-license ppocr-det.masterlic --config 30day.config --tcb vm.tcb \
  --customer-cert customer.ks.crt --registration-cert registration.ks.crt \
  --out ppocr-det.lic --registration ppocr-det.reg | sed -n 1p

step "9. Every artifact verifies"
for f in demo-cnn.dat demo-cnn.masterlic 30day.config vm.tcb demo-cnn.lic demo-cnn.reg; do
  "$T" inspect "$f" >/dev/null && echo "  $f: verified"
done
echo "  (demo-cnn.reg holds the license service's key share: inspect prints it redacted)"

step "10. Owner-side recovery: decrypt, byte-identical, and OpenVINO gives identical outputs"
"$T" decrypt --keystore isv.ks --master-license demo-cnn.masterlic --package demo-cnn.dat --out-dir recovered
cmp model/model.xml recovered/model.xml && cmp model/model.bin recovered/model.bin && echo "byte-identical"
"$PY" "$ROOT/examples/models/infer.py" model/model.xml --compare recovered/model.xml

step "11. Tampering is refused, with no plaintext released"
cp demo-cnn.dat tampered.dat
printf '\x00' | dd of=tampered.dat bs=1 seek=$(( $(stat -c %s tampered.dat) - 4096 )) conv=notrunc 2>/dev/null
if "$T" decrypt --keystore isv.ks --master-license demo-cnn.masterlic --package tampered.dat --out-dir t-out; then
  echo "ERROR: tampered package accepted"; exit 1
fi
test ! -e t-out/model.bin && echo "refused; nothing written"

step "12. The license service: ovsa-license-server on SQLite, the registration imported"
DB="sqlite:$W/licenses.db"
"$LS" --db "$DB" license add --trust-isv isv.ks.crt --registration-key registration.ks \
  demo-cnn.reg ppocr-det.reg
"$LS" --db "$DB" serve --listen "127.0.0.1:$LS_PORT" \
  --tls-cert license-server.ks.crt --tls-key license-server.ks \
  --trust-ek-ca ca-vtpm/chain.pem --trust-host-ek-ca ca-host/chain.pem --require-host-evidence \
  > license-server.log 2>&1 &
echo $! > license-server.pid
for _ in $(seq 100); do
  in_use "$LS_PORT" && break
  kill -0 "$(cat license-server.pid)" 2>/dev/null || { cat license-server.log; exit 1; }
  sleep 0.1
done
head -n 1 license-server.log
echo "-- host admin: enrol the host AK that signed the evidence (credential challenge under the host EK;"
echo "   the service refuses host evidence from unenrolled AKs)"
"$T" host-enroll --keystore customer.ks --license demo-cnn.lic --host-tcti "$HOST_TCTI" --ak-cache-dir host-ak

step "13. Customer (in the VM): an OVMS config.json with the ovsa custom loader and the model repository"
# What the customer received: <model>.dat + <model>.lic; their own keystore. OVMS layout:
# <base_path>/<version>/<controlled_access_file>.{dat,lic}.
for m in demo-cnn ppocr-det; do
  mkdir -p "customer/models/$m/1" && cp "$m.dat" "$m.lic" "customer/models/$m/1/"
done
cp customer.ks customer/customer.ks
cat > customer/loader.json <<EOF
{"tcti": "$VM_TCTI", "ak_cache_dir": "$W/customer/ak-cache"}
EOF
cat > customer/config.json <<EOF
{
  "custom_loader_config_list": [
    {"config": {"loader_name": "ovsa", "library_path": "$R/libovsaruntime.so",
                "loader_config_file": "$W/customer/loader.json"}}
  ],
  "model_config_list": [
    {"config": {"name": "demo-cnn", "base_path": "$W/customer/models/demo-cnn",
                "custom_loader_options": {"loader_name": "ovsa", "keystore": "$W/customer/customer.ks",
                                          "controlled_access_file": "demo-cnn"}}},
    {"config": {"name": "ppocr-det", "base_path": "$W/customer/models/ppocr-det",
                "custom_loader_options": {"loader_name": "ovsa", "keystore": "$W/customer/customer.ks",
                                          "controlled_access_file": "ppocr-det"}}}
  ]
}
EOF
cat customer/config.json

step "14. Customer: load through libovsaruntime.so, OpenVINO inference, compared with the plaintext models"
HS=("$R/ovsa-host-server" --config customer/config.json --shape ppocr-det=1,3,320,320)
"${HS[@]}" --plaintext "demo-cnn=$W/model/model.xml" --plaintext "ppocr-det=$W/det/ppocr-det.onnx"
echo "-- a second start (AK cached in ak-cache/):"
"${HS[@]}" 2>&1 | grep -E "plugin load|time to first result|\[ovsa\]\[info\].*loaded"
echo "-- the license service's audit log:"
"$LS" --db "$DB" audit --limit 4

step "15. The ISV revokes the CNN's license: its next load is refused (OpenVINO never sees it), the detector still serves"
LIC=$(grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' sale.txt | head -n 1)
"$LS" --db "$DB" license revoke "$LIC"
if out=$("${HS[@]}" 2>/dev/null); then
  echo "$out"; echo "ERROR: revoked license accepted"; exit 1
fi
echo "$out" | grep -E "FAILED|time to first result"
echo "$out" | grep -q "model demo-cnn version 1: load FAILED" && echo "$out" | grep -q "model ppocr-det version 1: time to first result"

step "Done. Artifacts are in $W"
