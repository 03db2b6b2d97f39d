#!/usr/bin/env bash
# The demo of scripts/demo.sh with the customer side where it is deployed: in a QEMU guest (TCG,
# OVMF measured boot) whose vTPM (swtpm) the plugin reaches through the guest kernel
# (device:/dev/tpmrm0), the license service on the host reached through a loopback-only relay
# (QEMU user networking, restrict=on, guestfwd 10.0.2.100:8443 -> 127.0.0.1:PORT).
#
#   ISV: keystores, two models (a generated IR CNN and the real PP-OCRv4 text detector, ONNX),
#   protect, a license offer. Host admin: the host TPM's quote into the vTPM's NV before the VM
#   starts. ISV: the TCB reference from a reference boot of the same guest image (PCRs 0-9 of the
#   vTPM after OVMF measured firmware, kernel, initrd and command line; host PCRs 0-7), sale.
#   License service on SQLite. Customer, in the guest: OVMS config.json, examples/host-server
#   loads both models through libovsaruntime.so, runs OpenVINO, checks the outputs equal the
#   plaintext models' and prints the load-time breakdown. The same load on the host (a host
#   vTPM with its own TCB and license) for comparison: guest/host ratios. Then the ISV revokes
#   the CNN's license: the guest's next load is refused, the detector still serves.
#
# Installs what is missing (scripts/setup.sh --openvino), fetches the guest parts (QEMU 7.2,
# OVMF, the Debian kernel, busybox; apt-get download into a cache, nothing installed; see
# docs/VM.md), builds what it needs (release; --debug: the debug build) and runs in
# target/vm-demo/. Everything started is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PROFILE=release
case "${1:-}" in
  --debug) PROFILE=debug ;;
  "") ;;
  *) echo "usage: $0 [--debug]   (--debug: use the debug build instead of release)" >&2; exit 2 ;;
esac
bash scripts/setup.sh --openvino
export TSS2_LOG=all+none
echo "== building ovsatool, ovsa-license-server, libovsaruntime.so, ovsa-host-server, ovsa-vm-run ($PROFILE)"
FLAG=(--release); [ "$PROFILE" = debug ] && FLAG=()
cargo build "${FLAG[@]}" --locked -q -p ovsatool -p ovsa-license-server -p ovsaruntime -p ovsa-host-server -p vm-tests --bins
R="$ROOT/target/$PROFILE"
T="$R/ovsatool"
LS="$R/ovsa-license-server"
VM="$R/ovsa-vm-run"
PY="$ROOT/.venv/bin/python"
W="$ROOT/target/vm-demo"
MEM=1024   # MiB: OpenVINO compiling the detector under TCG; PCR 0 depends on it (every boot the same)
for pidfile in "$W"/tpm-host/pid "$W"/tpm-hostrun/pid "$W"/license-server.pid; do
  if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
done
rm -rf "$W" && mkdir -p "$W/share" && cd "$W"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port_pair() {  # a free TCP port P with P+1 also free, not in $*
  local p
  while :; do
    p=$(( 20000 + RANDOM % 12000 ))
    case " $* " in *" $p "*|*" $((p + 1)) "*|*" $((p - 1)) "*) continue ;; esac
    in_use "$p" || in_use $((p + 1)) || break
  done
  echo "$p"
}
HOST_PORT=$(free_port_pair)
VMTCP_PORT=$(free_port_pair "$HOST_PORT")
HR_PORT=$(free_port_pair "$HOST_PORT" "$VMTCP_PORT")
LS_PORT=$(free_port_pair "$HOST_PORT" "$VMTCP_PORT" "$HR_PORT" $((HOST_PORT + 1)) $((VMTCP_PORT + 1)) $((HR_PORT + 1)))
HOST_TCTI="swtpm:host=127.0.0.1,port=$HOST_PORT"
HR_TCTI="swtpm:host=127.0.0.1,port=$HR_PORT"
cleanup() {
  if [ -f "$W/license-server.pid" ]; then kill "$(cat "$W/license-server.pid")" 2>/dev/null || true; fi
  for p in "$HOST_PORT" "$VMTCP_PORT" "$HR_PORT"; do
    swtpm_ioctl --tcp "127.0.0.1:$((p + 1))" -s >/dev/null 2>&1 || true
  done
  # Interrupted while a guest ran: QEMU and its swtpm run in their own process groups (a Ctrl-C
  # reaches only ovsa-vm-run); stop the ones whose command line names this demo's share.
  for d in /proc/[0-9]*; do
    if tr '\0' ' ' < "$d/cmdline" 2>/dev/null | grep -qE "(qemu-system|swtpm).*$W/(share|tpm-vm)"; then
      kill "${d#/proc/}" 2>/dev/null || true
    fi
  done
}
trap cleanup EXIT
# One guest: the same firmware, RAM, devices and command line every time (the TCB pins them).
guest() {  # SCRIPT-FILE: boots the guest, runs it, prints its output
  "$VM" --ovmf --memory "$MEM" --timeout 900 --share "$W/share" --vtpm-state "$W/tpm-vm" \
    --forward "8443:$LS_PORT" "$1"
}

step "1. Identities: the ISV, the customer, the license service's TLS key and its registration key"
"$T" keygen --keystore isv.ks --subject "CN=Acme Models, O=Acme"
"$T" keygen --keystore customer.ks --subject "CN=Customer One, O=Example Corp"
"$T" keygen --keystore license-server.ks --subject "CN=license.acme.local"
"$T" keygen --keystore registration.ks --subject "CN=license.acme.local registration"

step "2. Two models: an OpenVINO IR CNN (~4 MiB of weights) and the PP-OCRv4 text detector (ONNX), protected"
"$PY" "$ROOT/examples/models/make_model.py" model --weights-mib 4
mkdir -p det && cp "$ROOT/.venv/ppocr/ch_PP-OCRv4_det_infer.onnx" det/ppocr-det.onnx
"$T" protect --keystore isv.ks --name demo-cnn --version 1 --description "demo classifier" \
  --out demo-cnn.dat --master-license demo-cnn.masterlic model/model.xml model/model.bin
"$T" protect --keystore isv.ks --name ppocr-det --version 1 --description "PP-OCRv4 text detector" \
  --out ppocr-det.dat --master-license ppocr-det.masterlic det/ppocr-det.onnx

step "3. License offers: the guest's (service at the relay's guest end 10.0.2.100:8443, 60 s lease) and the host run's (loopback)"
"$T" licgen --keystore isv.ks --out guest.config --name "VM deployment" --days 30 --lease 60 \
  --server "https://10.0.2.100:8443" --server-cert license-server.ks.crt >/dev/null
"$T" licgen --keystore isv.ks --out host.config --name "host comparison" --days 30 --lease 60 \
  --server "https://127.0.0.1:$LS_PORT" --server-cert license-server.ks.crt >/dev/null

step "4. The machine: the host TPM, the VM's vTPM, a vTPM for the host-side comparison run (swtpm, two private EK CAs)"
tpm_provision() {  # STATE-DIR CA-DIR
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
    --flags not-need-init,startup-clear --pid file="$W/$1/pid" -d
}
tpm_provision tpm-host ca-host
tpm_provision tpm-vm ca-vtpm
tpm_provision tpm-hostrun ca-vtpm
tpm_start tpm-host "$HOST_PORT"
tpm_start tpm-hostrun "$HR_PORT"

step "5. Host admin, before the VM starts: the host TPM's quote into the vTPM's NV (host-quote), the vTPM then handed to QEMU"
tpm_start tpm-vm "$VMTCP_PORT"
"$T" host-quote --host-tcti "$HOST_TCTI" --vtpm-tcti "swtpm:host=127.0.0.1,port=$VMTCP_PORT" --ak-cache-dir host-ak
swtpm_ioctl --tcp "127.0.0.1:$((VMTCP_PORT + 1))" -s
for _ in $(seq 50); do [ -e "$W/tpm-vm/pid" ] && kill -0 "$(cat "$W/tpm-vm/pid")" 2>/dev/null || break; sleep 0.1; done
rm -f "$W/tpm-vm/pid"
"$T" host-quote --host-tcti "$HOST_TCTI" --vtpm-tcti "$HR_TCTI" --ak-cache-dir host-ak

step "6. The ISV's reference boot of the guest image: OVMF measures firmware, kernel, initrd and command line into the vTPM"
cat > ref.sh <<EOF
set -e
tpm2_pcrread -T device:/dev/tpmrm0 sha256:0,1,2,3,4,5,6,7,8,9 > $W/share/ref-pcrs.txt
grep -m1 'model name' /proc/cpuinfo > $W/share/guest-cpu.txt
grep -m1 '^flags' /proc/cpuinfo >> $W/share/guest-cpu.txt
EOF
guest ref.sh
cp share/ref-pcrs.txt ref-pcrs.txt
"$T" tcb --keystore isv.ks --out vm.tcb --name demo-vm-ovmf --vtpm-pcrs-file ref-pcrs.txt --host-from-tpm "$HOST_TCTI" >/dev/null
echo "vm.tcb pins the vTPM's sha256 PCRs 0-9 of the reference boot:"
sed -n '/sha256/,$p' ref-pcrs.txt | tail -n +2
echo "and the host TPM's PCRs 0-7 (the host evidence in the vTPM's NV carries them)"
"$T" tcb --keystore isv.ks --out host-run.tcb --name demo-host-run --from-tpm "$HR_TCTI" --host-evidence >/dev/null

step "7. Sales: each model for the VM (vm.tcb) and for the host comparison run (host-run.tcb)"
for m in demo-cnn ppocr-det; do
  "$T" sale --keystore isv.ks --master-license $m.masterlic --config guest.config --tcb vm.tcb \
    --customer-cert customer.ks.crt --registration-cert registration.ks.crt \
    --out $m.lic --registration $m.reg | tee $m.sale.txt | sed -n 1p
  "$T" sale --keystore isv.ks --master-license $m.masterlic --config host.config --tcb host-run.tcb \
    --customer-cert customer.ks.crt --registration-cert registration.ks.crt \
    --out $m.host.lic --registration $m.host.reg | sed -n 1p
done

step "8. The license service on the host (127.0.0.1:$LS_PORT, SQLite), host evidence required"
DB="sqlite:$W/licenses.db"
"$LS" --db "$DB" license add --trust-isv isv.ks.crt --registration-key registration.ks \
  demo-cnn.reg ppocr-det.reg demo-cnn.host.reg ppocr-det.host.reg
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
echo "-- host admin: enrol the host AK that signed the evidence"
"$T" host-enroll --keystore customer.ks --license demo-cnn.host.lic --host-tcti "$HOST_TCTI" --ak-cache-dir host-ak

step "9. Customer: OVMS config.json for the guest (vTPM: device:/dev/tpmrm0) and for the host run"
customer() {  # DIR TCTI LIC-SUFFIX
  local d="$1"
  for m in demo-cnn ppocr-det; do
    mkdir -p "$d/models/$m/1" && cp "$m.dat" "$d/models/$m/1/" && cp "$m$3.lic" "$d/models/$m/1/$m.lic"
  done
  cp customer.ks "$d/customer.ks"
  printf '{"tcti": "%s", "ak_cache_dir": "%s/ak-cache"}\n' "$2" "$d" > "$d/loader.json"
  cat > "$d/config.json" <<EOF
{
  "custom_loader_config_list": [
    {"config": {"loader_name": "ovsa", "library_path": "$R/libovsaruntime.so",
                "loader_config_file": "$d/loader.json"}}
  ],
  "model_config_list": [
    {"config": {"name": "demo-cnn", "base_path": "$d/models/demo-cnn",
                "custom_loader_options": {"loader_name": "ovsa", "keystore": "$d/customer.ks",
                                          "controlled_access_file": "demo-cnn"}}},
    {"config": {"name": "ppocr-det", "base_path": "$d/models/ppocr-det",
                "custom_loader_options": {"loader_name": "ovsa", "keystore": "$d/customer.ks",
                                          "controlled_access_file": "ppocr-det"}}}
  ]
}
EOF
}
customer "$W/share/customer" "device:/dev/tpmrm0" ""
customer "$W/host-customer" "$HR_TCTI" ".host"
cat share/customer/config.json
# 96x96 input for the detector: under TCG a 320x320 inference takes ~100 s on this machine.
HS_ARGS="--shape ppocr-det=1,3,96,96 --plaintext demo-cnn=$W/model/model.xml --plaintext ppocr-det=$W/det/ppocr-det.onnx"

step "10. Customer, in the guest: load through libovsaruntime.so (vTPM attestation with host evidence, license service via the relay), OpenVINO, compared with the plaintext models"
echo "(the guest's output appears when it ends: a boot of ~20 s plus the loads and OpenVINO under TCG, a minute or two)"
cat > load.sh <<EOF
cd $W/share/customer
$R/ovsa-host-server --config config.json $HS_ARGS
EOF
set +e
guest load.sh 2>&1 | tee guest-load.txt
rc=${PIPESTATUS[0]}
set -e
[ "$rc" = 0 ] || { echo "ERROR: the load in the guest failed"; exit 1; }

step "11. The same load on the host (its own vTPM over TCP, license bound to that vTPM's TCB)"
(cd "$W/host-customer" && "$R/ovsa-host-server" --config config.json $HS_ARGS) 2>&1 | tee host-load.txt

step "12. Load time: in the guest (TCG) beside the host"
echo "host CPU:  $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), $(nproc) cores"
echo "host flags:$(grep -m1 '^flags' /proc/cpuinfo | cut -d: -f2-)"
echo "guest CPU: $(sed -n 's/^model name[[:space:]]*: //p' share/guest-cpu.txt) (QEMU 7.2 TCG, -cpu max, 1 vCPU, -m $MEM)"
echo "guest flags:$(sed -n 's/^flags[[:space:]]*://p' share/guest-cpu.txt)"
ratio() { awk -v g="$1" -v h="$2" 'BEGIN { if (h > 0) printf "%.1fx", g / h; else print "-" }'; }
printf '%-10s %-28s %12s %12s %8s\n' model phase "guest ms" "host ms" ratio
for m in demo-cnn ppocr-det; do
  g=$(grep -m1 "model $m version 1: time to first result" guest-load.txt || true)
  h=$(grep -m1 "model $m version 1: time to first result" host-load.txt || true)
  num() { echo "$1" | sed -E "s|.*$2 ([0-9.]+).*|\1|"; }
  for phase in "time to first result" "plugin load" "read/compile" "inference"; do
    gv=$(num "$g" "$phase"); hv=$(num "$h" "$phase")
    printf '%-10s %-28s %12s %12s %8s\n' "$m" "$phase" "$gv" "$hv" "$(ratio "$gv" "$hv")"
  done
  # The plugin's own breakdown of its load (TPM, TLS, service, decryption).
  gb=$(grep -m1 "model $m version 1: loaded" guest-load.txt | sed -E 's/.*\(([0-9]+ bytes;.*)\)$/\1/' || true)
  hb=$(grep -m1 "model $m version 1: loaded" host-load.txt | sed -E 's/.*\(([0-9]+ bytes;.*)\)$/\1/' || true)
  echo "  plugin, guest: $gb"
  echo "  plugin, host:  $hb"
done

step "13. The ISV revokes the CNN's VM license: the guest's next load is refused, the detector still serves"
LIC=$(grep -oE '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}' demo-cnn.sale.txt | head -n 1)
"$LS" --db "$DB" license revoke "$LIC"
cat > revoked.sh <<EOF
cd $W/share/customer
$R/ovsa-host-server --config config.json --shape ppocr-det=1,3,96,96
EOF
set +e
out=$(guest revoked.sh 2>&1)
set -e
echo "$out" | grep -E "FAILED|time to first result|ovsa-vm-run:"
echo "$out" | grep -q "model demo-cnn version 1: load FAILED" \
  && echo "$out" | grep -q "model ppocr-det version 1: time to first result" \
  || { echo "ERROR: revocation not enforced in the guest"; echo "$out"; exit 1; }
echo "-- the license service's audit log:"
"$LS" --db "$DB" audit --limit 6

step "Done. Artifacts are in $W"
