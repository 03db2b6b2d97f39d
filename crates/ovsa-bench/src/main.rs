//! `ovsa-bench`: measures protected-model decryption against the goals of the foundation issue.
//!
//! Run it with a release build: `cargo run --release -p ovsa-bench -- --size-mib 512`
//! (`--size-mib 64` for a quick smoke run). It generates an incompressible OpenVINO IR model (a
//! small `model.xml` and a `model.bin` of `--size-mib` MiB) in a temporary directory (under
//! `--dir` if given), protects it, and prints:
//!
//! 1. **In-memory decrypt throughput on one core**: the `.bin` file's sealed chunks, already in
//!    memory, opened in place with [`FileCipher`] on one thread (the goal figure), and, for
//!    information, `Package::decrypt_file_into` from a `Vec<u8>` source with one thread (which
//!    adds a copy of each chunk out of the source).
//! 2. **Protected load vs plaintext read**, measured side by side, interleaved round by round
//!    (order rotated each round) after a warm-up round, so the page cache is warm for both:
//!    plaintext = `std::fs::read` of the `.xml` and the `.bin`; protected = `Package::open`
//!    (header signature and length check) + `decrypt_file_into` of every file into a freshly
//!    allocated buffer of the exact size, which is what the runtime does. Printed as times and as
//!    the ratio protected / plaintext, with the default thread count (the goal) and with one.
//! 3. **Peak RSS of the protected load**: the load runs in a child process (this binary re-run with
//!    a hidden subcommand; the model key goes through a stdin pipe, never argv) that reports its
//!    own `VmHWM` from `/proc/self/status` just before exiting.
//! 4. **Peak RSS and throughput of `protect`**, also in a child process (which prints the model
//!    key on a stdout pipe for the rest of the run). Its time includes the final `fsync`.
//! 5. A summary with PASS/FAIL per goal and the machine (CPU count and model, kernel).
//!
//! Every timed figure is the median of `--rounds` rounds (5 at least). The exit code is 0 even
//! when a goal is missed: this is a benchmark, not a test; the summary says which goal missed.
//! The temporary model and package are deleted at the end unless `--keep` is given.

use std::hint::black_box;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ovsa_core::crypto::aead::TAG_LEN;
use ovsa_core::crypto::KeyAlgorithm;
use ovsa_core::identity::Keystore;
use ovsa_core::package::format::{parse_prefix, DEFAULT_CHUNK_SIZE, PREFIX_LEN};
use ovsa_core::package::reader::default_threads;
use ovsa_core::package::stream::{chunk_count, sealed_len, FileCipher};
use ovsa_core::package::{classify_inputs, protect, FileKind, ModelKey, Package, ProtectOptions};
use zeroize::Zeroizing;

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// Goal: in-memory decrypt throughput on one core, GiB/s.
const GOAL_DECRYPT_GIBS: f64 = 4.0;
/// Goal: protected load time / plaintext read time.
const GOAL_LOAD_RATIO: f64 = 1.3;
/// Goal: load peak RSS <= this factor x model size + [`GOAL_LOAD_RSS_SLACK_MIB`].
const GOAL_LOAD_RSS_FACTOR: f64 = 1.1;
/// See [`GOAL_LOAD_RSS_FACTOR`].
const GOAL_LOAD_RSS_SLACK_MIB: f64 = 32.0;
/// Goal: `protect` peak RSS, MiB, whatever the model size.
const GOAL_PROTECT_RSS_MIB: f64 = 64.0;

/// Benchmark of protected-model decryption, load time and peak memory.
#[derive(Parser)]
#[command(name = "ovsa-bench", version, about, long_about = None)]
struct Cli {
    /// Size of the generated model's weights file (`model.bin`), in MiB.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65536))]
    size_mib: u64,
    /// Directory in which to create the temporary model directory (default: the system's).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Timed rounds per measurement (medians are reported; at least 5).
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u64).range(5..=1000))]
    rounds: u64,
    /// Runs of the `protect` and load child processes (median time, highest peak RSS).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=100))]
    child_runs: u64,
    /// Keep the generated model and package instead of deleting them.
    #[arg(long)]
    keep: bool,
    #[command(subcommand)]
    child: Option<ChildCommand>,
}

/// Hidden subcommands run in child processes, so their peak RSS is theirs alone.
#[derive(Subcommand)]
enum ChildCommand {
    /// Protects `xml` + `bin` into `out`; prints the model key, time and peak RSS on stdout.
    #[command(hide = true)]
    ProtectOnce {
        #[arg(long)]
        xml: PathBuf,
        #[arg(long)]
        bin: PathBuf,
        #[arg(long)]
        out: PathBuf,
    },
    /// Reads the model key (hex) from stdin, loads `package` into memory as the runtime does,
    /// and prints time and peak RSS on stdout.
    #[command(hide = true)]
    LoadOnce {
        #[arg(long)]
        package: PathBuf,
        #[arg(long)]
        threads: usize,
    },
}

type AnyResult<T> = Result<T, Box<dyn std::error::Error>>;

fn main() {
    let cli = Cli::parse();
    let result = match &cli.child {
        Some(ChildCommand::ProtectOnce { xml, bin, out }) => child_protect(xml, bin, out),
        Some(ChildCommand::LoadOnce { package, threads }) => child_load(package, *threads),
        None => run(&cli),
    };
    if let Err(e) = result {
        eprintln!("ovsa-bench: error: {e}");
        std::process::exit(2);
    }
}

// ---------------------------------------------------------------------------------------------
// The benchmark proper (parent process).
// ---------------------------------------------------------------------------------------------

/// Paths of the generated model and its package.
struct Model {
    xml: PathBuf,
    bin: PathBuf,
    package: PathBuf,
    /// Plaintext size of all files.
    size: u64,
}

/// One goal's verdict for the summary.
struct Verdict {
    pass: bool,
    line: String,
}

fn run(cli: &Cli) -> AnyResult<()> {
    let rounds = cli.rounds as usize;
    let parent = cli.dir.clone().unwrap_or_else(std::env::temp_dir);
    let tmp = tempfile::Builder::new()
        .prefix("ovsa-bench-")
        .tempdir_in(&parent)
        .map_err(|e| {
            format!(
                "creating a temporary directory in {}: {e}",
                parent.display()
            )
        })?;
    let dir = tmp.path().to_path_buf();
    let threads = default_threads();
    let load_start = load_average();

    println!("ovsa-bench: {}", machine_description());
    println!(
        "model: IR, model.bin {} MiB of incompressible data + model.xml, in {}",
        cli.size_mib,
        dir.display()
    );
    println!(
        "settings: chunk {} KiB, {rounds} rounds per measurement (medians), default threads {threads}",
        DEFAULT_CHUNK_SIZE / 1024
    );

    let t = Instant::now();
    let mut model = generate_model(&dir, cli.size_mib)?;
    println!(
        "generated {:.1} MiB in {:.2} s",
        model.size as f64 / MIB,
        secs(t.elapsed())
    );

    // 4. protect, in child processes (also produces the package and key for everything else).
    println!(
        "\n[protect] {} run(s) in a child process each",
        cli.child_runs
    );
    let mut protect_times = Vec::new();
    let mut protect_hwm = 0u64;
    let mut key = None;
    for run in 0..cli.child_runs {
        let out = spawn_child(
            &[
                "protect-once",
                "--xml",
                path_str(&model.xml)?,
                "--bin",
                path_str(&model.bin)?,
                "--out",
                path_str(&model.package)?,
            ],
            None,
        )?;
        let time = Duration::from_secs_f64(field(&out, "seconds")?.parse()?);
        let hwm = field(&out, "vmhwm_kib")?.parse::<u64>()? * 1024;
        println!(
            "  run {}: {:.3} s, {:.0} MiB/s, peak RSS {:.1} MiB",
            run + 1,
            secs(time),
            model.size as f64 / MIB / secs(time),
            hwm as f64 / MIB
        );
        protect_times.push(time);
        protect_hwm = protect_hwm.max(hwm);
        key = Some(parse_key(field(&out, "model_key")?)?);
    }
    let key = key.ok_or("no protect run")?;
    let protect_time = median(&mut protect_times);
    let protect_mibs = model.size as f64 / MIB / secs(protect_time);
    let package_len = std::fs::metadata(&model.package)?.len();
    println!(
        "  median {:.3} s = {protect_mibs:.0} MiB/s (includes the final fsync); package {:.1} MiB",
        secs(protect_time),
        package_len as f64 / MIB
    );
    model.size = model.size.max(1);

    // 1. In-memory decrypt, one core.
    println!(
        "\n[decrypt in memory, 1 thread] model.bin; GiB/s by wall clock / by process CPU time"
    );
    let mem = bench_in_memory(&model, &key, rounds)?;
    println!(
        "  FileCipher::open_chunk in place:          {:.2} / {:.2}",
        mem.aead_wall, mem.aead_cpu
    );
    println!(
        "  decrypt_file_into from Vec<u8> (+ copy): {:.2} / {:.2}",
        mem.copy_wall, mem.copy_cpu
    );
    // "On one core": bytes per second the thread spent on a core, so other processes competing
    // for the CPU do not count against it. On an idle machine wall and CPU time agree.
    let decrypt_gibs = mem.aead_cpu;

    // 2. Protected load vs plaintext read, interleaved.
    println!(
        "\n[load, warm page cache] fs::read vs Package::open + decrypt_file_into; wall (process CPU)"
    );
    let load = bench_load(&model, &key, threads, rounds)?;
    let show = |what: &str, t: Timing, ratio: Option<f64>| {
        println!(
            "  {what:<28} {:.3} s ({:.3} s CPU)  {:.2} GiB/s{}",
            secs(t.wall),
            secs(t.cpu),
            model.size as f64 / GIB / secs(t.wall),
            ratio.map(|r| format!("  ratio {r:.2}")).unwrap_or_default()
        );
    };
    show("plaintext read:", load.plain, None);
    show(
        &format!("protected load, {threads} thread(s):"),
        load.protected,
        Some(load.ratio()),
    );
    show(
        "protected load, 1 thread:",
        load.protected_1,
        Some(load.ratio_1()),
    );

    // 3. Peak RSS of the load, in child processes.
    println!(
        "\n[load peak RSS] {} run(s) in a child process each, {threads} thread(s)",
        cli.child_runs
    );
    let mut load_hwm = 0u64;
    for run in 0..cli.child_runs {
        let out = spawn_child(
            &[
                "load-once",
                "--package",
                path_str(&model.package)?,
                "--threads",
                &threads.to_string(),
            ],
            Some(&hex::encode(key.as_bytes())),
        )?;
        let hwm = field(&out, "vmhwm_kib")?.parse::<u64>()? * 1024;
        let before = field(&out, "vmhwm_before_kib")?.parse::<u64>()? * 1024;
        let time: f64 = field(&out, "seconds")?.parse()?;
        println!(
            "  run {}: peak RSS {:.1} MiB (process baseline {:.1} MiB), load {time:.3} s",
            run + 1,
            hwm as f64 / MIB,
            before as f64 / MIB
        );
        load_hwm = load_hwm.max(hwm);
    }

    // 5. Summary.
    let size_mib = model.size as f64 / MIB;
    let load_rss_goal = GOAL_LOAD_RSS_FACTOR * size_mib + GOAL_LOAD_RSS_SLACK_MIB;
    let load_rss_mib = load_hwm as f64 / MIB;
    let protect_rss_mib = protect_hwm as f64 / MIB;
    let verdicts = [
        Verdict {
            pass: decrypt_gibs >= GOAL_DECRYPT_GIBS,
            line: format!(
                "in-memory decrypt, 1 core: {decrypt_gibs:.2} GiB/s by CPU time, {:.2} by wall \
                 (goal >= {GOAL_DECRYPT_GIBS} GiB/s); decrypt_file_into from memory {:.2} / {:.2} (wall / CPU)",
                mem.aead_wall, mem.copy_wall, mem.copy_cpu
            ),
        },
        Verdict {
            pass: load.ratio() <= GOAL_LOAD_RATIO,
            line: format!(
                "protected load / plaintext read: {:.2}x ({:.3} s vs {:.3} s wall, {threads} threads) \
                 (goal <= {GOAL_LOAD_RATIO}x); 1 thread {:.2}x ({:.3} s)",
                load.ratio(),
                secs(load.protected.wall),
                secs(load.plain.wall),
                load.ratio_1(),
                secs(load.protected_1.wall)
            ),
        },
        Verdict {
            pass: load_rss_mib <= load_rss_goal,
            line: format!(
                "load peak RSS: {load_rss_mib:.1} MiB = {:.3} x model (goal <= {GOAL_LOAD_RSS_FACTOR} x \
                 {size_mib:.1} + {GOAL_LOAD_RSS_SLACK_MIB} = {load_rss_goal:.1} MiB)",
                load_rss_mib / size_mib
            ),
        },
        Verdict {
            pass: protect_rss_mib <= GOAL_PROTECT_RSS_MIB,
            line: format!(
                "protect peak RSS: {protect_rss_mib:.1} MiB (goal <= {GOAL_PROTECT_RSS_MIB} MiB); \
                 protect throughput {protect_mibs:.0} MiB/s incl. fsync"
            ),
        },
    ];
    println!("\n==================== ovsa-bench summary ====================");
    println!("machine: {}", machine_description());
    println!(
        "load:    1-min load average {load_start} at start, {} at end (> nproc means noisy figures)",
        load_average()
    );
    println!(
        "model:   {size_mib:.1} MiB IR (model.bin {} MiB + model.xml), chunk {} KiB, {rounds} rounds, medians",
        cli.size_mib,
        DEFAULT_CHUNK_SIZE / 1024
    );
    for v in &verdicts {
        println!("[{}] {}", if v.pass { "PASS" } else { "FAIL" }, v.line);
    }
    let missed = verdicts.iter().filter(|v| !v.pass).count();
    if missed == 0 {
        println!("result:  all {} goals met", verdicts.len());
    } else {
        println!(
            "result:  {missed} of {} goals MISSED (see FAIL lines above)",
            verdicts.len()
        );
    }
    println!("=============================================================");

    if cli.keep {
        let kept = tmp.keep();
        println!("kept the model and package in {}", kept.display());
    } else {
        tmp.close()?;
    }
    Ok(())
}

/// Writes `model.xml` (a few KiB of IR-like text) and `model.bin` (`size_mib` MiB of
/// pseudo-random, incompressible bytes) into `dir`.
fn generate_model(dir: &Path, size_mib: u64) -> AnyResult<Model> {
    let xml = dir.join("model.xml");
    let bin = dir.join("model.bin");
    let mut text =
        String::from("<?xml version=\"1.0\"?>\n<net name=\"bench\" version=\"11\">\n<layers>\n");
    for i in 0..64 {
        text.push_str(&format!(
            "<layer id=\"{i}\" name=\"conv{i}\" type=\"Convolution\" version=\"opset1\">\
             <data strides=\"1,1\" pads_begin=\"1,1\" pads_end=\"1,1\"/></layer>\n"
        ));
    }
    text.push_str("</layers>\n</net>\n");
    std::fs::write(&xml, &text)?;

    let mut rng = SplitMix64(0x0123_4567_89ab_cdef ^ size_mib);
    let mut file = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&bin)?);
    let mut block = vec![0u8; 1 << 20];
    for _ in 0..size_mib {
        for word in block.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes());
        }
        file.write_all(&block)?;
    }
    file.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    let size = text.len() as u64 + size_mib * (1 << 20);
    Ok(Model {
        xml,
        bin,
        package: dir.join("model.dat"),
        size,
    })
}

/// SplitMix64: fast, and its output does not compress.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// In-memory decrypt throughputs (GiB/s, medians) of the `.bin` file on one thread.
struct InMemory {
    /// [`FileCipher::open_chunk`] in place, by wall-clock time.
    aead_wall: f64,
    /// [`FileCipher::open_chunk`] in place, by process CPU time (only this thread runs then).
    aead_cpu: f64,
    /// `decrypt_file_into` from a `Vec<u8>` source (copy out of the source + decrypt), by wall.
    copy_wall: f64,
    /// The same by process CPU time (`decrypt_file_into` works on a scoped thread).
    copy_cpu: f64,
}

/// Measures [`InMemory`]: one untimed warm-up round, then `rounds` rounds.
fn bench_in_memory(model: &Model, key: &ModelKey, rounds: usize) -> AnyResult<InMemory> {
    // The header (from the file), then the package bytes in memory.
    let header = Package::open(&model.package)?.header().clone();
    let body = header.body();
    let index = body.find(FileKind::IrBin).ok_or("no .bin in the package")?;
    let entry = &body.files[index];
    let chunk = body.chunk_size;
    let chunks = chunk_count(entry.size, chunk);
    let bytes = std::fs::read(&model.package)?;
    let header_len = parse_prefix(bytes.get(..PREFIX_LEN).ok_or("package too short")?)?;
    let mut offset = (PREFIX_LEN + header_len as usize) as u64;
    for f in &body.files[..index] {
        offset += sealed_len(f.size, chunk).ok_or("size overflow")?;
    }
    let sealed = sealed_len(entry.size, chunk).ok_or("size overflow")?;
    let start = usize::try_from(offset)?;
    let end = start + usize::try_from(sealed)?;
    // The sealed chunks of the file as read from disk; a working copy is restored before each
    // round (untimed) because opening in place overwrites the ciphertext.
    let pristine = bytes.get(start..end).ok_or("package too short")?.to_vec();
    let cipher = FileCipher::new(key, &header.digest(), u32::try_from(index)?)?;
    let pkg = Package::from_source(bytes)?;
    let mut work = pristine.clone();
    let mut out = vec![0u8; usize::try_from(entry.size)?];

    let mut samples: [Vec<Duration>; 4] = Default::default();
    for round in 0..=rounds {
        work.copy_from_slice(&pristine);
        let (t, c) = (Instant::now(), process_cpu());
        for (c, part) in work.chunks_mut(chunk as usize + TAG_LEN).enumerate() {
            let (ct, tag) = part.split_at_mut(part.len() - TAG_LEN);
            let c = c as u64;
            if !cipher.open_chunk(c, c + 1 == chunks, ct, tag) {
                return Err(format!("chunk {c} did not authenticate").into());
            }
        }
        let aead = [t.elapsed(), process_cpu() - c];
        black_box(&work);

        let (t, c) = (Instant::now(), process_cpu());
        pkg.decrypt_file_into(index, key, &mut out, 1)?;
        let copy = [t.elapsed(), process_cpu() - c];
        black_box(&out);
        if round > 0 {
            for (s, d) in samples.iter_mut().zip(aead.into_iter().chain(copy)) {
                s.push(d);
            }
        }
    }
    let gibs = |v: &mut Vec<Duration>| entry.size as f64 / GIB / secs(median(v));
    let [mut aw, mut ac, mut cw, mut cc] = samples;
    Ok(InMemory {
        aead_wall: gibs(&mut aw),
        aead_cpu: gibs(&mut ac),
        copy_wall: gibs(&mut cw),
        copy_cpu: gibs(&mut cc),
    })
}

/// Median wall-clock and process CPU times of one way of loading the model.
#[derive(Clone, Copy)]
struct Timing {
    wall: Duration,
    cpu: Duration,
}

/// Median load times.
struct LoadTimes {
    plain: Timing,
    protected: Timing,
    protected_1: Timing,
}

impl LoadTimes {
    fn ratio(&self) -> f64 {
        secs(self.protected.wall) / secs(self.plain.wall)
    }
    fn ratio_1(&self) -> f64 {
        secs(self.protected_1.wall) / secs(self.plain.wall)
    }
}

/// Plaintext read vs protected load (default threads and one thread), interleaved: one untimed
/// warm-up round, then `rounds` rounds whose order rotates.
fn bench_load(
    model: &Model,
    key: &ModelKey,
    threads: usize,
    rounds: usize,
) -> AnyResult<LoadTimes> {
    let mut wall: [Vec<Duration>; 3] = Default::default();
    let mut cpu: [Vec<Duration>; 3] = Default::default();
    for round in 0..=rounds {
        for k in 0..3 {
            let which = (k + round) % 3;
            let c = process_cpu();
            let t = match which {
                0 => load_plain(model)?,
                1 => load_protected(&model.package, key, threads)?.0,
                _ => load_protected(&model.package, key, 1)?.0,
            };
            // The CPU time includes dropping (unmapping) the buffers, on both sides.
            let c = process_cpu() - c;
            if round > 0 {
                wall[which].push(t);
                cpu[which].push(c);
            }
        }
    }
    let mut timing = |i: usize| Timing {
        wall: median(&mut wall[i]),
        cpu: median(&mut cpu[i]),
    };
    Ok(LoadTimes {
        plain: timing(0),
        protected: timing(1),
        protected_1: timing(2),
    })
}

/// Reads the plaintext model into memory, as OpenVINO would read an unprotected model.
fn load_plain(model: &Model) -> AnyResult<Duration> {
    let t = Instant::now();
    let xml = std::fs::read(&model.xml)?;
    let bin = std::fs::read(&model.bin)?;
    let elapsed = t.elapsed();
    black_box((&xml, &bin));
    Ok(elapsed)
}

/// Loads the protected model as the runtime does: open and verify the package, then decrypt
/// every file into a fresh buffer of its exact size. Returns the time and the buffers' total size.
fn load_protected(package: &Path, key: &ModelKey, threads: usize) -> AnyResult<(Duration, u64)> {
    let t = Instant::now();
    let pkg = Package::open(package)?;
    let mut buffers = Vec::with_capacity(pkg.header().body().files.len());
    for (i, f) in pkg.header().body().files.iter().enumerate() {
        // Plain `Vec`s like `fs::read`'s: the bench's model is not secret (and a zeroizing drop
        // would come after the timed load anyway).
        let mut buf = vec![0u8; usize::try_from(f.size)?];
        pkg.decrypt_file_into(i, key, &mut buf, threads)?;
        buffers.push(buf);
    }
    let elapsed = t.elapsed();
    black_box(&buffers);
    Ok((elapsed, buffers.iter().map(|b| b.len() as u64).sum()))
}

// ---------------------------------------------------------------------------------------------
// Child processes.
// ---------------------------------------------------------------------------------------------

/// Runs this binary with `args`, feeding `stdin` if given, and returns its stdout.
fn spawn_child(args: &[&str], stdin: Option<&str>) -> AnyResult<String> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    {
        let mut pipe = child.stdin.take().ok_or("no stdin pipe")?;
        if let Some(s) = stdin {
            pipe.write_all(s.as_bytes())?;
        }
    }
    let mut out = String::new();
    child
        .stdout
        .take()
        .ok_or("no stdout pipe")?
        .read_to_string(&mut out)?;
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("child `{}` failed: {status}", args[0]).into());
    }
    Ok(out)
}

/// `protect-once`: protects the model and prints `model_key`, `seconds` and `vmhwm_kib`.
fn child_protect(xml: &Path, bin: &Path, out: &Path) -> AnyResult<()> {
    let (keystore, _csr) = Keystore::generate(KeyAlgorithm::EcdsaP256, "CN=ovsa-bench", 30)?;
    let inputs = classify_inputs(&[xml.to_path_buf(), bin.to_path_buf()])?;
    let opts = ProtectOptions {
        model_name: "bench".into(),
        model_version: "1".into(),
        description: "ovsa-bench model".into(),
        chunk_size: DEFAULT_CHUNK_SIZE,
        overwrite: true,
    };
    let t = Instant::now();
    let protected = protect(&inputs, &opts, &keystore, out, &mut |_| {})?;
    let elapsed = t.elapsed();
    let hwm = vm_hwm_kib()?;
    let key = Zeroizing::new(hex::encode(protected.model_key.as_bytes()));
    println!("model_key={}", key.as_str());
    println!("seconds={}", secs(elapsed));
    println!("vmhwm_kib={hwm}");
    Ok(())
}

/// `load-once`: reads the model key from stdin, loads the package and prints `seconds`,
/// `vmhwm_before_kib` and `vmhwm_kib`.
fn child_load(package: &Path, threads: usize) -> AnyResult<()> {
    let mut line = Zeroizing::new(String::new());
    std::io::stdin().read_to_string(&mut line)?;
    let key = parse_key(line.trim())?;
    let before = vm_hwm_kib()?;
    let (elapsed, bytes) = load_protected(package, &key, threads)?;
    let hwm = vm_hwm_kib()?;
    println!("bytes={bytes}");
    println!("seconds={}", secs(elapsed));
    println!("vmhwm_before_kib={before}");
    println!("vmhwm_kib={hwm}");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// This process's peak resident set size (`VmHWM`), in KiB.
fn vm_hwm_kib() -> AnyResult<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .ok_or("no VmHWM in /proc/self/status")?;
    Ok(line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()?)
}

/// CPU time consumed so far by `clock` (e.g. `CLOCK_PROCESS_CPUTIME_ID`).
fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable `timespec` that `clock_gettime` only writes to; the
    // CPU-time clocks exist on every supported Linux (on failure we return zero).
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// CPU time of the whole process (all threads, user + system).
fn process_cpu() -> Duration {
    cpu_time(libc::CLOCK_PROCESS_CPUTIME_ID)
}

/// The 1-minute load average, to judge how busy the machine was.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

fn parse_key(hex_key: &str) -> AnyResult<ModelKey> {
    let bytes = Zeroizing::new(hex::decode(hex_key.trim())?);
    let arr: [u8; 32] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| "model key is not 32 bytes")?;
    Ok(ModelKey::from_bytes(arr))
}

/// The value of `name=value` in a child's output.
fn field<'a>(out: &'a str, name: &str) -> AnyResult<&'a str> {
    out.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
        .ok_or_else(|| format!("child output has no '{name}'").into())
}

fn path_str(p: &Path) -> AnyResult<&str> {
    p.to_str()
        .ok_or_else(|| format!("{} is not UTF-8", p.display()).into())
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    match v.len() {
        0 => Duration::ZERO,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2,
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// CPU count, CPU model, kernel and memory, for the record.
fn machine_description() -> String {
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, v)| v.trim())
        })
        .unwrap_or("unknown CPU");
    let flags = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("flags")?
                .split_once(':')
                .map(|(_, v)| v.to_owned())
        })
        .unwrap_or_default();
    let has = |f: &str| flags.split_whitespace().any(|x| x == f);
    let isa: Vec<&str> = ["aes", "pclmulqdq", "vaes", "vpclmulqdq", "avx512f"]
        .into_iter()
        .filter(|f| has(f))
        .collect();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map(|kib| kib / MIB)
        .unwrap_or(0.0);
    format!(
        "nproc {nproc}, {cpu} ({}), {mem_gib:.0} GiB RAM, Linux {}",
        isa.join(" "),
        kernel.trim()
    )
}
