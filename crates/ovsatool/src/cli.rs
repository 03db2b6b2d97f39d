//! Command-line definitions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// OpenVINO Security Add-on tool for model owners (ISVs).
///
/// A typical flow:
///
///   ovsatool keygen  --keystore isv.ks --subject "CN=Acme Models"
///   ovsatool protect --keystore isv.ks --name face-detect --version 1 \
///                    --out fd.dat --master-license fd.masterlic model.xml model.bin
///   ovsatool licgen  --keystore isv.ks --out 30day.config --days 30 \
///                    --server https://license.example.com:8443 --server-cert server.crt
///   ovsatool tcb     --keystore isv.ks --out vm.tcb --vtpm-pcrs-file pcrs.txt
///   ovsatool sale    --keystore isv.ks --master-license fd.masterlic --config 30day.config \
///                    --tcb vm.tcb --customer-cert customer.crt --out fd.lic --registration fd.reg
///
/// Give `fd.dat` and `fd.lic` to the customer; import `fd.reg` into the license service.
/// Passphrase-protected keystores read the passphrase from --passphrase-file or the
/// OVSA_KEYSTORE_PASSPHRASE environment variable.
#[derive(Debug, Parser)]
#[command(name = "ovsatool", version, verbatim_doc_comment)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a keystore (key pair, CSR, self-signed certificate) or import a CA-signed certificate.
    Keygen(KeygenArgs),
    /// Encrypt and sign a model into a package (.dat) and its master license (.masterlic).
    #[command(alias = "controlAccess")]
    Protect(ProtectArgs),
    /// Protect a package's model again under a fresh model key (new package and master license),
    /// e.g. after a suspected extraction: licenses sold for the old package do not open the new one.
    Reprotect(ReprotectArgs),
    /// Define a license policy and the license service(s) that enforce it.
    Licgen(LicgenArgs),
    /// Make a signed TCB reference: the PCR values the customer's vTPM (and host TPM) must report.
    #[command(alias = "gen-tcb-signature")]
    Tcb(TcbArgs),
    /// Make a signed runtime policy: the file digests IMA may record under path patterns (the
    /// plugin, the serving process, the OpenVINO libraries); bind it with `sale --runtime-policy`.
    RuntimePolicy(RuntimePolicyArgs),
    /// Sell a license: a customer license (.lic) and the license service's registration (.reg).
    Sale(SaleArgs),
    /// Show any OVSA artifact as JSON and verify it; exits non-zero if it does not verify.
    Inspect(InspectArgs),
    /// Owner-side recovery: decrypt a package with its master license.
    Decrypt(DecryptArgs),
    /// Host admin: enrol the host TPM's attestation key with the license service (once per host).
    HostEnroll(HostEnrollArgs),
    /// Host admin: quote the host TPM bound to the VM's vTPM and store the evidence in the vTPM's NV.
    HostQuote(HostQuoteArgs),
    /// Quote a TPM and write the evidence plus tpm2-tools files (quote.msg, quote.sig, pcrs.bin, ak.pub).
    Attest(AttestArgs),
    /// Customer diagnostic: run the whole license check (TPM, license service, key, model) and
    /// report each step. Spends one use of the license (like a model load) unless --renew-only.
    Check(CheckArgs),
}

/// `host-quote`.
#[derive(Debug, Args)]
#[command(
    after_help = "Run on the physical host before the VM starts, while the host still holds the vTPM's \
platform authorization. The NV indices (0x01000000..) are defined with platform authorization so the guest \
cannot rewrite or remove them; verifiers rely on the signatures only."
)]
pub struct HostQuoteArgs {
    /// TCTI of the host's hardware TPM, e.g. device:/dev/tpmrm0.
    #[arg(long, value_name = "TCTI")]
    pub host_tcti: String,
    /// TCTI of the VM's vTPM (e.g. the swtpm socket of the VM).
    #[arg(long, value_name = "TCTI")]
    pub vtpm_tcti: String,
    /// Host PCRs to quote.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7")]
    pub pcrs: Vec<u8>,
    /// Host PCR bank.
    #[arg(long, default_value = "sha256")]
    pub bank: String,
    /// Directory holding the host AK enrolled with `host-enroll` (the same directory). Without
    /// it a fresh, unenrolled AK signs the evidence, which license services refuse by default.
    #[arg(long, value_name = "DIR", alias = "ak-cache")]
    pub ak_cache_dir: Option<PathBuf>,
}

/// `host-enroll`.
#[derive(Debug, Args)]
#[command(
    after_help = "Run on the physical host, once per host (and again if the AK cache is lost), as the customer of a license served by the license service. The service challenges the host AK under the host TPM's EK (its certificate must chain to a TPM vendor CA the service trusts); only that TPM can answer. Then run `host-quote --ak-cache-dir DIR` with the same DIR before each VM start."
)]
pub struct HostEnrollArgs {
    /// Customer keystore (the TLS client identity of the license) and passphrase.
    #[command(flatten)]
    pub ks: KeystoreArgs,
    /// A customer license (.lic) naming the license service.
    #[arg(long, value_name = "FILE")]
    pub license: PathBuf,
    /// TCTI of the host's hardware TPM, e.g. device:/dev/tpmrm0.
    #[arg(long, value_name = "TCTI")]
    pub host_tcti: String,
    /// Directory to keep the host AK in (created if missing); host-quote must use the same one.
    #[arg(long, value_name = "DIR", alias = "ak-cache")]
    pub ak_cache_dir: PathBuf,
}

/// `attest`.
#[derive(Debug, Args)]
#[command(
    after_help = "Writes evidence.json and the tpm2-tools files quote.msg, quote.sig, pcrs.bin (tpm2-tools' \
serialized PCR format, as `tpm2_quote -o` writes it) and ak.pub, then prints the `tpm2_checkquote` \
command that verifies them. Existing files are not replaced without --force."
)]
pub struct AttestArgs {
    /// TCTI of the TPM (default: env TCTI, else TPM2TOOLS_TCTI, else device:/dev/tpmrm0).
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
    /// Qualifying data (hex, up to 64 bytes), e.g. a verifier's nonce.
    #[arg(long, value_name = "HEX")]
    pub nonce: String,
    /// Output directory (created if missing).
    #[arg(long, value_name = "DIR", alias = "out")]
    pub out_dir: PathBuf,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    /// PCRs to quote.
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7")]
    pub pcrs: Vec<u8>,
    /// PCR bank.
    #[arg(long, default_value = "sha256")]
    pub bank: String,
}

/// `check`.
#[derive(Debug, Args)]
#[command(
    after_help = "A full check is a real model load for the license service: it counts one use against \
--usage-limit and takes a seat under --instance-limit; the check releases that seat's lease when it \
is done (best effort, a few seconds at most), so it does not keep a seat for lease + grace. Use --renew-only to check attestation and \
policy without spending a use (no model key is released then, so the model is not decrypted). \
With --json, stdout holds one JSON object {\"result\": \"ok\"|\"failed\", \"steps\": [...], ...}; \
the exit status is 0 only for \"ok\"."
)]
pub struct CheckArgs {
    /// Customer keystore and passphrase.
    #[command(flatten)]
    pub ks: KeystoreArgs,
    /// The customer license (.lic).
    #[arg(long, value_name = "FILE")]
    pub license: PathBuf,
    /// The protected model (.dat).
    #[arg(long, value_name = "FILE")]
    pub package: PathBuf,
    /// TCTI of the vTPM (default: env TCTI, else device:/dev/tpmrm0).
    #[arg(long, value_name = "TCTI")]
    pub tcti: Option<String>,
    /// Directory to cache the attestation key in (saves ~1 s per run on hardware TPMs).
    #[arg(long = "ak-cache-dir", value_name = "DIR", alias = "ak-cache")]
    pub ak_cache: Option<PathBuf>,
    /// Only renew (re-attest and re-check the policy without counting a load; no model key).
    #[arg(long)]
    pub renew_only: bool,
    /// Print one machine-readable JSON result on stdout instead of the step lines.
    #[arg(long)]
    pub json: bool,
}

/// Options shared by commands that open a keystore.
#[derive(Debug, Args)]
pub struct KeystoreArgs {
    /// The keystore file.
    #[arg(long, value_name = "FILE")]
    pub keystore: PathBuf,
    /// Read the keystore passphrase from this file (first line) instead of OVSA_KEYSTORE_PASSPHRASE.
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
}

/// `keygen`.
#[derive(Debug, Args)]
#[command(
    after_help = "Writes FILE (mode 0600), FILE.csr and FILE.crt. With --import-cert, replaces the \
certificate of an existing keystore by one a CA issued for its key (from FILE.csr)."
)]
pub struct KeygenArgs {
    /// Keystore and passphrase.
    #[command(flatten)]
    pub ks: KeystoreArgs,
    /// Subject of the new identity, e.g. "CN=Acme Models, O=Acme, C=US".
    #[arg(
        long,
        required_unless_present = "import_cert",
        conflicts_with = "import_cert"
    )]
    pub subject: Option<String>,
    /// Key algorithm: p256 (default) or p384.
    #[arg(long, default_value = "p256")]
    pub algorithm: String,
    /// Lifetime of the self-signed certificate in days.
    #[arg(long, default_value_t = 3650)]
    pub days: u32,
    /// Encrypt the private key with the passphrase (from --passphrase-file or OVSA_KEYSTORE_PASSPHRASE).
    #[arg(long)]
    pub encrypt: bool,
    /// Import a CA-signed certificate (PEM or DER) for the keystore's key.
    #[arg(long, value_name = "CERT")]
    pub import_cert: Option<PathBuf>,
    /// With --import-cert: the CA chain (PEM), stored beside the certificate.
    #[arg(long, value_name = "PEM", requires = "import_cert")]
    pub chain: Option<PathBuf>,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}

/// `protect`.
#[derive(Debug, Args)]
pub struct ProtectArgs {
    /// ISV keystore and passphrase.
    #[command(flatten)]
    pub ks: KeystoreArgs,
    /// Model name (plain text: no '/', '\\' or '..').
    #[arg(long)]
    pub name: String,
    /// Model version label (plain text, like --name).
    #[arg(long, default_value = "1")]
    pub version: String,
    /// Description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Output package (.dat).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Output master license (.masterlic): keep it; it is needed to sell licenses.
    #[arg(long, value_name = "FILE")]
    pub master_license: PathBuf,
    /// Chunk size in bytes (power of two, 4096..=67108864).
    #[arg(long, default_value_t = ovsa_core::package::format::DEFAULT_CHUNK_SIZE)]
    pub chunk_size: u32,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
    /// Model files: MODEL.xml MODEL.bin (OpenVINO IR) or MODEL.onnx (checked: not empty, the
    /// .xml an IR `<net>` document, the .onnx an ONNX protobuf).
    #[arg(required = true, value_name = "MODEL_FILE")]
    pub files: Vec<PathBuf>,
}

/// `licgen`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exactly one of --perpetual, --days, --not-after sets the time limit. \
--usage-limit and --instance-limit add count limits. The pin of --server-cert (SHA-256 of its public key) \
is what the runtime accepts; --next-server-cert adds the pin of the key you will rotate to."
)]
pub struct LicgenArgs {
    /// ISV keystore and passphrase.
    #[command(flatten)]
    pub ks: KeystoreArgs,
    /// Output config file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Name of this offer (shown by inspect).
    #[arg(long, default_value = "license")]
    pub name: String,
    /// No time limit.
    #[arg(long, group = "time")]
    pub perpetual: bool,
    /// Valid for N days from the first activation.
    #[arg(long, value_name = "N", group = "time")]
    pub days: Option<u32>,
    /// Valid until this date (YYYY-MM-DD, end of day UTC, or RFC 3339).
    #[arg(long, value_name = "DATE", group = "time")]
    pub not_after: Option<String>,
    /// Start of a date window (YYYY-MM-DD, start of day UTC, or RFC 3339); only together with
    /// --not-after, which ends the window (a window must end in the future, after it starts).
    #[arg(long, value_name = "DATE", requires = "not_after")]
    pub not_before: Option<String>,
    /// Maximum number of model loads.
    #[arg(long, value_name = "N")]
    pub usage_limit: Option<u64>,
    /// Maximum number of distinct attested machines.
    #[arg(long, value_name = "N")]
    pub instance_limit: Option<u32>,
    /// Seconds between license re-checks (1..=86400; 60 or more for production): the longest a
    /// runtime serves a revoked license. A customer's loader config can only shorten it.
    #[arg(long, value_name = "SECONDS", default_value_t = ovsa_core::license::policy::DEFAULT_LEASE_SECONDS)]
    pub lease: u32,
    /// Seconds past an expired lease that a runtime which cannot reach the license service
    /// keeps serving (0..=86400). A customer's loader config can only shorten it.
    #[arg(long, value_name = "SECONDS", default_value_t = ovsa_core::license::policy::DEFAULT_GRACE_SECONDS)]
    pub grace_seconds: u32,
    /// License service URL, https://HOST:PORT. Repeat it for fallback addresses of the same
    /// service (tried in order when one is unreachable; all pinned to --server-cert's key).
    #[arg(long, value_name = "URL", required = true)]
    pub server: Vec<String>,
    /// The license service's TLS certificate (its key is pinned).
    #[arg(long, value_name = "CERT")]
    pub server_cert: PathBuf,
    /// The certificate of the service's next key, for rotation.
    #[arg(long, value_name = "CERT")]
    pub next_server_cert: Option<PathBuf>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// `tcb`.
#[derive(Debug, Args)]
#[command(
    after_help = "PCR values come as INDEX=HEX (repeat the option) or from a file written by `tpm2_pcrread`: \
its text output (`tpm2_pcrread > pcrs.txt`, all banks or some; empty banks are skipped), its \
`-F serialized -o FILE` binary, or its default `-o FILE` binary (the digests only: give the \
same PCRs with --pcrs and the bank with --vtpm-bank/--host-bank). --from-tpm without a TCTI \
uses env TCTI, else TPM2TOOLS_TCTI, else device:/dev/tpmrm0."
)]
pub struct TcbArgs {
    /// ISV keystore and passphrase.
    #[command(flatten)]
    pub ks: KeystoreArgs,
    /// Output TCB reference.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Name of this reference.
    #[arg(long, default_value = "tcb")]
    pub name: String,
    /// PCR bank of --vtpm-pcr values.
    #[arg(long, default_value = "sha256")]
    pub vtpm_bank: String,
    /// Expected vTPM PCR value, INDEX=HEX.
    #[arg(long, value_name = "INDEX=HEX")]
    pub vtpm_pcr: Vec<String>,
    /// Expected vTPM PCRs from `tpm2_pcrread` output (text, or its -o binary).
    #[arg(long, value_name = "FILE", conflicts_with = "vtpm_pcr")]
    pub vtpm_pcrs_file: Option<PathBuf>,
    /// PCR bank of --host-pcr values.
    #[arg(long, default_value = "sha256")]
    pub host_bank: String,
    /// Expected host TPM PCR value, INDEX=HEX.
    #[arg(long, value_name = "INDEX=HEX")]
    pub host_pcr: Vec<String>,
    /// Expected host TPM PCRs from `tpm2_pcrread` output (text, or its -o binary).
    #[arg(long, value_name = "FILE", conflicts_with = "host_pcr")]
    pub host_pcrs_file: Option<PathBuf>,
    /// Read the vTPM PCRs (--vtpm-bank, --pcrs) from a live TPM at this TCTI (without a value:
    /// env TCTI, else TPM2TOOLS_TCTI, else device:/dev/tpmrm0).
    #[arg(long, value_name = "TCTI", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["vtpm_pcr", "vtpm_pcrs_file"])]
    pub from_tpm: Option<String>,
    /// Read the host PCRs from a live host TPM at this TCTI.
    #[arg(long, value_name = "TCTI", conflicts_with_all = ["host_pcr", "host_pcrs_file"])]
    pub host_from_tpm: Option<String>,
    /// Take the host PCRs from the host evidence stored in the vTPM given by --from-tpm
    /// (the values the host quote signed).
    #[arg(long, requires = "from_tpm", conflicts_with_all = ["host_pcr", "host_pcrs_file", "host_from_tpm"])]
    pub host_evidence: bool,
    /// Maximum age of the host evidence in seconds (1..=315360000): the license service refuses
    /// a host quote it first saw longer ago than this (`host_evidence_stale`); setting it makes
    /// host evidence required. Default: no limit.
    #[arg(long, value_name = "SECONDS")]
    pub host_max_age: Option<u64>,
    /// PCR indices read by --from-tpm / --host-from-tpm (and held by a `tpm2_pcrread -o` values
    /// file).
    #[arg(long, value_delimiter = ',', default_value = "0,1,2,3,4,5,6,7")]
    pub pcrs: Vec<u8>,
    /// Pin PCRs by events instead of values: allow every event this firmware event log of a
    /// reference boot (`/sys/kernel/security/tpm0/binary_bios_measurements`, copied) extends
    /// into the --pin-pcrs. Repeat for several reference boots (e.g. one per allowed kernel):
    /// their events are all allowed.
    #[arg(long, value_name = "FILE")]
    pub event_log: Vec<PathBuf>,
    /// The PCRs --event-log pins (their values are left out of the reference): by default the
    /// kernel (4), the Secure Boot variables (7) and the kernel command line and initrd (9).
    #[arg(long, value_delimiter = ',', default_value = "4,7,9")]
    pub pin_pcrs: Vec<u8>,
    /// Allow one more event in a pinned PCR: PCR:TYPE:HEX, TYPE a TCG name
    /// (EV_EFI_BOOT_SERVICES_APPLICATION) or 0x + 8 hex digits, HEX its digest in --vtpm-bank.
    #[arg(long, value_name = "PCR:TYPE:HEX")]
    pub allow_event: Vec<String>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// `runtime-policy`.
#[derive(Debug, Args)]
#[command(
    after_help = "A PATTERN is DIR/NAME as IMA records paths in the guest: DIR an absolute \
directory (/opt/ovsa/lib/), such a directory followed by **/ (it or any directory below) or **/ \
alone (any directory); NAME one component where * matches any run of characters except /. \
Examples: --file /opt/ovsa/lib/libovsaruntime.so=build/libovsaruntime.so, --ima-log \
ascii_runtime_measurements --pattern '/usr/lib/**/libopenvino*.so*'. Any file IMA measures \
under a pattern must have one of the digests listed for it; files under no pattern are not \
checked (docs/ATTESTATION.md section 11)."
)]
pub struct RuntimePolicyArgs {
    /// ISV keystore and passphrase.
    #[command(flatten)]
    pub ks: KeystoreArgs,
    /// Output runtime policy.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Name of this policy.
    #[arg(long, default_value = "runtime")]
    pub name: String,
    /// Allow the sha256 of the local file PATH under PATTERN (repeatable; several files under
    /// one pattern are all allowed).
    #[arg(long, value_name = "PATTERN=PATH")]
    pub file: Vec<String>,
    /// A reference IMA measurement list of the deployed guest (binary
    /// `binary_runtime_measurements` or text `ascii_runtime_measurements`, copied): every
    /// sha256 file digest it records under a --pattern is allowed under that pattern.
    #[arg(long, value_name = "FILE")]
    pub ima_log: Vec<PathBuf>,
    /// A pattern to take from --ima-log (repeatable); each must match at least one entry.
    #[arg(long, value_name = "PATTERN", requires = "ima_log")]
    pub pattern: Vec<String>,
    /// Replace an existing output file.
    #[arg(long)]
    pub force: bool,
}

/// `sale`.
#[derive(Debug, Args)]
pub struct SaleArgs {
    /// ISV keystore and passphrase.
    #[command(flatten)]
    pub ks: KeystoreArgs,
    /// The package's master license.
    #[arg(long, value_name = "FILE")]
    pub master_license: PathBuf,
    /// The license policy config (from licgen).
    #[arg(long, value_name = "FILE")]
    pub config: PathBuf,
    /// The TCB reference (from tcb).
    #[arg(long, value_name = "FILE")]
    pub tcb: PathBuf,
    /// The customer's certificate (PEM or DER; from the customer's `keygen`).
    #[arg(long, value_name = "CERT")]
    pub customer_cert: PathBuf,
    /// Require the customer certificate to chain to this CA (PEM); default: accept as given.
    #[arg(long, value_name = "PEM")]
    pub customer_ca: Option<PathBuf>,
    /// The license service's registration certificate (an EC P-256/P-384 key, e.g. from
    /// `ovsatool keygen --keystore registration.ks`): the key share in the registration is
    /// sealed to it, so only the service holding that key can import it.
    #[arg(long, value_name = "CERT")]
    pub registration_cert: PathBuf,
    /// Bind the license to vTPMs whose EK certificate chains to this EK CA (PEM, several CA
    /// certificates allowed, or DER): the license service refuses any other vTPM for this
    /// license (`ek_not_allowed_for_license`), even one from another CA it trusts. Repeatable.
    #[arg(long = "ek-ca", value_name = "CERT")]
    pub ek_ca: Vec<PathBuf>,
    /// Bind the license to this enrolled vTPM EK certificate (PEM or DER, as the vTPM holds it
    /// in NV index 0x01c00002 or 0x01c00016). Repeatable; combines with --ek-ca (either allows).
    #[arg(long = "ek-cert", value_name = "CERT")]
    pub ek_cert: Vec<PathBuf>,
    /// Bind this runtime policy (from `runtime-policy`, signed by the same ISV key): the
    /// license service then asks for PCR 10 and refuses a guest whose IMA list is missing or
    /// records a file under one of its patterns with an unlisted digest (`runtime_not_allowed`).
    #[arg(long, value_name = "FILE")]
    pub runtime_policy: Option<PathBuf>,
    /// Output customer license (.lic), for the customer.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Output registration record (.reg), for the license service (its key share is sealed to
    /// the service's registration key).
    #[arg(long, value_name = "FILE")]
    pub registration: PathBuf,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
}

/// `inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Any OVSA artifact: keystore, package (.dat), master license, config, TCB reference,
    /// license, registration, or a certificate.
    pub file: PathBuf,
    /// Also require the signer (or a certificate) to chain to this CA (PEM).
    #[arg(long, value_name = "PEM")]
    pub trust_ca: Option<PathBuf>,
}

/// `reprotect`.
#[derive(Debug, Args)]
#[command(
    after_help = "Rotation after a suspected extraction: reprotect, sell new licenses for the new package \
(sale with the new master license), register them, ship the new package, and revoke the old licenses \
at the license service once the customers moved. The old model key stays compromised: whoever \
extracted it can still decrypt the old package (see docs/THREAT-MODEL.md)."
)]
pub struct ReprotectArgs {
    /// ISV keystore and passphrase (the key of the old master license; it signs the new package).
    #[command(flatten)]
    pub ks: KeystoreArgs,
    /// The old package's master license.
    #[arg(long, value_name = "FILE")]
    pub master_license: PathBuf,
    /// The old package.
    #[arg(long, value_name = "FILE")]
    pub package: PathBuf,
    /// Output package (.dat) under the new key.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Output master license (.masterlic) of the new package.
    #[arg(long, value_name = "FILE")]
    pub new_master_license: PathBuf,
    /// Replace existing output files.
    #[arg(long)]
    pub force: bool,
}

/// `decrypt`.
#[derive(Debug, Args)]
pub struct DecryptArgs {
    /// ISV keystore and passphrase.
    #[command(flatten)]
    pub ks: KeystoreArgs,
    /// The package's master license.
    #[arg(long, value_name = "FILE")]
    pub master_license: PathBuf,
    /// The package.
    #[arg(long, value_name = "FILE")]
    pub package: PathBuf,
    /// Directory to write the model files into (created if missing; its parent must exist).
    #[arg(long, value_name = "DIR")]
    pub out_dir: PathBuf,
    /// Replace existing files.
    #[arg(long)]
    pub force: bool,
}
