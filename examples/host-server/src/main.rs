//! An example model-server host for protected models, doing what OpenVINO Model Server does with
//! a custom loader, in ~400 lines of Rust:
//!
//! 1. read an OVMS `config.json` (`custom_loader_config_list` + `model_config_list`);
//! 2. `dlopen` each loader's `library_path` (`libovsaruntime.so`) and create one loader per
//!    `loader_name` with its `loader_config_file` (C API, `include/ovsa_runtime.h`);
//! 3. load every configured version (OVMS `model_version_policy`, default: latest) through
//!    `ovsa_loader_load_model`: the plugin attests the TPM to the license service, receives the
//!    key share and decrypts straight into buffers this host hands out from its allocation
//!    callback (the IR weights land directly in an OpenVINO tensor: no extra plaintext copy);
//! 4. read the model from memory and compile it with OpenVINO (`openvino` crate, runtime-linked
//!    against the PyPI wheel's `libopenvino_c.so`), `INFERENCE_PRECISION_HINT=f32`;
//! 5. run one inference on a fixed deterministic input and print the outputs and the load-time
//!    breakdown. `--plaintext NAME=PATH` also runs the unprotected model file and checks the
//!    outputs are bit-identical (exit status 1 otherwise).

use std::collections::BTreeMap;
use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use openvino::{
    CompiledModel, Core, DeviceType, ElementType, Model, PartialShape, RwPropertyKey, Shape, Tensor,
};
use serde_json::Value;

// The C API's values, from the plugin's one source of them (the enums the C header is generated
// from). Included by path: this host dlopens the plugin and does not link the plugin's crate.
#[allow(dead_code)]
#[path = "../../../loader/ffi/status.rs"]
mod ovsa_status;

use ovsa_status::{OvsaBuffer, OvsaStatus};

const OVSA_MODEL_TYPE_IR: i32 = OvsaStatus::MODEL_TYPE_IR.code();
const OVSA_MODEL_TYPE_ONNX: i32 = OvsaStatus::MODEL_TYPE_ONNX.code();
const OVSA_BUFFER_MODEL: i32 = OvsaBuffer::MODEL.code();
const OVSA_BUFFER_WEIGHTS: i32 = OvsaBuffer::WEIGHTS.code();

#[derive(Parser)]
#[command(
    version,
    about = "Loads the protected models of an OVMS config.json through libovsaruntime.so and runs them with OpenVINO"
)]
struct Args {
    /// OVMS configuration file (custom_loader_config_list + model_config_list).
    #[arg(long)]
    config: PathBuf,
    /// libopenvino_c.so.N to use. Default: env OVSA_OPENVINO_LIB, else the wheel in .venv/
    /// (scripts/setup.sh --openvino) of the working directory or of this repository.
    #[arg(long)]
    openvino_lib: Option<PathBuf>,
    /// OpenVINO device.
    #[arg(long, default_value = "CPU")]
    device: String,
    /// Also run the plaintext model NAME from PATH (.xml or .onnx) and require bit-identical
    /// outputs. Repeatable.
    #[arg(long, value_name = "NAME=PATH")]
    plaintext: Vec<String>,
    /// Size used for dynamic input dimensions other than the batch (which is 1).
    #[arg(long, default_value_t = 64)]
    dynamic_dim: i64,
    /// Static shape for the dynamic inputs of model NAME, e.g. `cls=1,3,48,192`. Repeatable.
    #[arg(long, value_name = "NAME=D0,D1,...")]
    shape: Vec<String>,
}

type AllocFn = unsafe extern "C" fn(*mut c_void, i32, usize) -> *mut u8;
type NewFn = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> i32;
type LoadFn = unsafe extern "C" fn(
    *const c_void,
    *const c_char,
    *const c_char,
    i32,
    *const c_char,
    AllocFn,
    *mut c_void,
    *mut i32,
) -> i32;
type UnloadFn = unsafe extern "C" fn(*const c_void, *const c_char, i32) -> i32;
type FreeFn = unsafe extern "C" fn(*mut c_void);
type LastErrorFn = unsafe extern "C" fn(*mut c_char, usize) -> usize;

/// One `ovsa_loader_new` handle (one OVMS `loader_name`) and the library it came from.
struct Loader {
    handle: *mut c_void,
    load: LoadFn,
    unload: UnloadFn,
    free: FreeFn,
    last_error: LastErrorFn,
}

impl Loader {
    fn open(library: &Path, config_file: &str) -> Result<Loader, String> {
        // SAFETY: loading the plugin runs no initialisers with preconditions; the symbols are
        // declared with the exact signatures of include/ovsa_runtime.h.
        unsafe {
            // Never unloaded (OVMS never calls dlclose either): lease worker threads of a
            // freed loader may still be finishing a renewal inside the library's code.
            let lib: &'static libloading::Library = Box::leak(Box::new(
                libloading::Library::new(library)
                    .map_err(|e| format!("cannot load {}: {e}", library.display()))?,
            ));
            let sym = |name: &[u8]| -> Result<*mut c_void, String> {
                lib.get::<*mut c_void>(name)
                    .map(|s| *s)
                    .map_err(|e| format!("{}: {e}", String::from_utf8_lossy(name)))
            };
            let new: NewFn = std::mem::transmute(sym(b"ovsa_loader_new\0")?);
            let load: LoadFn = std::mem::transmute(sym(b"ovsa_loader_load_model\0")?);
            let unload: UnloadFn = std::mem::transmute(sym(b"ovsa_loader_unload\0")?);
            let free: FreeFn = std::mem::transmute(sym(b"ovsa_loader_free\0")?);
            let last_error: LastErrorFn = std::mem::transmute(sym(b"ovsa_last_error\0")?);
            let cfg = CString::new(config_file).map_err(|e| e.to_string())?;
            let mut handle = std::ptr::null_mut();
            if new(cfg.as_ptr(), &mut handle) != 0 || handle.is_null() {
                return Err(format!("ovsa_loader_new: {}", read_error(last_error)));
            }
            Ok(Loader {
                handle,
                load,
                unload,
                free,
                last_error,
            })
        }
    }
}

impl Drop for Loader {
    fn drop(&mut self) {
        // SAFETY: the handle came from ovsa_loader_new and this is its last use.
        unsafe { (self.free)(self.handle) }
    }
}

fn read_error(last_error: LastErrorFn) -> String {
    let mut buf = vec![0u8; 2048];
    // SAFETY: buf is writable for its length; the message is NUL-terminated.
    unsafe { last_error(buf.as_mut_ptr().cast(), buf.len()) };
    CStr::from_bytes_until_nul(&buf)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The host's buffers for one load: the model file in a Vec, the IR weights directly in the
/// OpenVINO tensor that `read_model` will reference (so it must outlive the compiled model).
#[derive(Default)]
struct Buffers {
    model: Vec<u8>,
    weights: Option<Tensor>,
    error: Option<String>,
}

unsafe extern "C" fn alloc_buffer(ctx: *mut c_void, which: i32, size: usize) -> *mut u8 {
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // SAFETY: ctx is the &mut Buffers passed to ovsa_loader_load_model by this host.
        let b = unsafe { &mut *ctx.cast::<Buffers>() };
        match which {
            OVSA_BUFFER_MODEL => {
                b.model = vec![0u8; size];
                b.model.as_mut_ptr()
            }
            OVSA_BUFFER_WEIGHTS => {
                let tensor = Shape::new(&[size as i64])
                    .and_then(|s| Tensor::new(ElementType::U8, &s))
                    .and_then(|mut t| {
                        let p = t.get_raw_data_mut()?.as_mut_ptr();
                        Ok((t, p))
                    });
                match tensor {
                    Ok((t, p)) => {
                        b.weights = Some(t);
                        p
                    }
                    Err(e) => {
                        b.error = Some(format!("weights tensor of {size} bytes: {e}"));
                        std::ptr::null_mut()
                    }
                }
            }
            _ => std::ptr::null_mut(),
        }
    }));
    result.unwrap_or(std::ptr::null_mut())
}

/// A model compiled by OpenVINO. Field order matters: the compiled model (and the model read
/// from memory) are dropped before the weights tensor they refer to.
struct Loaded {
    compiled: CompiledModel,
    _model: Model,
    _weights: Option<Tensor>,
}

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

/// Reads (from memory), reshapes dynamic inputs, compiles.
fn compile(
    core: &mut Core,
    device: &str,
    model_bytes: &[u8],
    weights: Option<Tensor>,
    dynamic: &Dynamic,
) -> Result<Loaded, String> {
    let mut model = core
        .read_model_from_buffer(model_bytes, weights.as_ref())
        .map_err(|e| format!("read_model: {e}"))?;
    fix_dynamic_inputs(&mut model, dynamic)?;
    let compiled = core
        .compile_model(&model, DeviceType::from(device))
        .map_err(|e| format!("compile_model: {e}"))?;
    Ok(Loaded {
        compiled,
        _model: model,
        _weights: weights,
    })
}

fn compile_file(
    core: &mut Core,
    device: &str,
    path: &Path,
    dynamic: &Dynamic,
) -> Result<Loaded, String> {
    let weights = path.with_extension("bin");
    let weights = if path.extension().is_some_and(|e| e == "xml") {
        weights.display().to_string()
    } else {
        String::new()
    };
    let mut model = core
        .read_model_from_file(&path.display().to_string(), &weights)
        .map_err(|e| format!("read_model {}: {e}", path.display()))?;
    fix_dynamic_inputs(&mut model, dynamic)?;
    let compiled = core
        .compile_model(&model, DeviceType::from(device))
        .map_err(|e| format!("compile_model: {e}"))?;
    Ok(Loaded {
        compiled,
        _model: model,
        _weights: None,
    })
}

/// How dynamic input dimensions become static: the model's `--shape` if its rank matches, else
/// batch 1 and `dim` for the others.
struct Dynamic {
    shape: Option<Vec<i64>>,
    dim: i64,
}

fn fix_dynamic_inputs(model: &mut Model, dynamic: &Dynamic) -> Result<(), String> {
    let n = model.get_inputs_len().map_err(|e| e.to_string())?;
    for i in 0..n {
        let node = model.get_input_by_index(i).map_err(|e| e.to_string())?;
        let ps = node.get_partial_shape().map_err(|e| e.to_string())?;
        if !ps.is_dynamic() {
            continue;
        }
        let dims: Vec<i64> = ps
            .get_dimensions()
            .iter()
            .enumerate()
            .map(|(k, d)| match (d.is_dynamic(), k) {
                (false, _) => d.get_min(),
                (true, 0) => 1,
                (true, _) => dynamic.dim,
            })
            .collect();
        let dims = match &dynamic.shape {
            Some(s) if s.len() == dims.len() => s.clone(),
            _ => dims,
        };
        let name = node.get_name().map_err(|e| e.to_string())?;
        let shape =
            PartialShape::new_static(dims.len() as i64, &dims).map_err(|e| e.to_string())?;
        model
            .reshape_input_by_name(&name, &shape)
            .map_err(|e| format!("reshape {name} to {dims:?}: {e}"))?;
    }
    Ok(())
}

/// One output: name, shape and values (as f32 when the element type is f32, else raw bytes).
struct Output {
    name: String,
    shape: Vec<i64>,
    bytes: Vec<u8>,
    f32s: Option<Vec<f32>>,
}

/// Runs one inference on the fixed input: values (i * 37 % 101) / 101 for f32 inputs, the byte
/// pattern i % 7 for other element types.
fn infer(loaded: &mut Loaded) -> Result<Vec<Output>, String> {
    let e = |e: openvino::InferenceError| e.to_string();
    let mut request = loaded.compiled.create_infer_request().map_err(e)?;
    for i in 0..loaded.compiled.get_input_size().map_err(e)? {
        let node = loaded.compiled.get_input_by_index(i).map_err(e)?;
        let ty = node.get_element_type().map_err(e)?;
        let mut tensor = Tensor::new(ty, &node.get_shape().map_err(e)?).map_err(e)?;
        if ty == ElementType::F32 {
            for (k, v) in tensor
                .get_data_mut::<f32>()
                .map_err(e)?
                .iter_mut()
                .enumerate()
            {
                *v = (k * 37 % 101) as f32 / 101.0;
            }
        } else {
            for (k, v) in tensor.get_raw_data_mut().map_err(e)?.iter_mut().enumerate() {
                *v = (k % 7) as u8;
            }
        }
        request.set_input_tensor_by_index(i, &tensor).map_err(e)?;
    }
    request.infer().map_err(e)?;
    let mut outputs = Vec::new();
    for i in 0..loaded.compiled.get_output_size().map_err(e)? {
        let node = loaded.compiled.get_output_by_index(i).map_err(e)?;
        let t = request.get_output_tensor_by_index(i).map_err(e)?;
        let f32s = if t.get_element_type().map_err(e)? == ElementType::F32 {
            Some(t.get_data::<f32>().map_err(e)?.to_vec())
        } else {
            None
        };
        outputs.push(Output {
            name: node.get_name().unwrap_or_default(),
            shape: t.get_shape().map_err(e)?.get_dimensions().to_vec(),
            bytes: t.get_raw_data().map_err(e)?.to_vec(),
            f32s,
        });
    }
    Ok(outputs)
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
    })
}

fn describe(o: &Output) -> String {
    let values = match &o.f32s {
        Some(v) => {
            let head: Vec<String> = v.iter().take(10).map(|x| format!("{x:.6}")).collect();
            let top = v
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(b.1))
                .map(|(k, _)| k)
                .unwrap_or(0);
            format!(
                "argmax {top}, first [{}]{}",
                head.join(", "),
                if v.len() > 10 { ", ..." } else { "" }
            )
        }
        None => format!("{} bytes", o.bytes.len()),
    };
    format!(
        "{} {:?}: {values}; digest {:016x}",
        o.name,
        o.shape,
        fnv1a(&o.bytes)
    )
}

/// libopenvino_c.so.N: the explicit path, env OVSA_OPENVINO_LIB, or the wheel in a .venv/.
fn find_openvino_c(explicit: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(p) = explicit.or_else(|| std::env::var_os("OVSA_OPENVINO_LIB").map(PathBuf::from)) {
        return Ok(p);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let repo = repo.canonicalize().unwrap_or(repo);
    let mut bases = vec![repo];
    if let Ok(cwd) = std::env::current_dir() {
        bases.insert(0, cwd);
    }
    for base in &bases {
        let lib = base.join(".venv/lib");
        let Ok(pythons) = std::fs::read_dir(&lib) else {
            continue;
        };
        for py in pythons.flatten() {
            let libs = py.path().join("site-packages/openvino/libs");
            let Ok(files) = std::fs::read_dir(&libs) else {
                continue;
            };
            for f in files.flatten() {
                if f.file_name()
                    .to_string_lossy()
                    .starts_with("libopenvino_c.so.")
                {
                    return Ok(f.path());
                }
            }
        }
    }
    Err(format!(
        "libopenvino_c.so.N not found in {}: install the OpenVINO wheel with \
         `bash scripts/setup.sh --openvino`, or pass --openvino-lib / set OVSA_OPENVINO_LIB",
        bases
            .iter()
            .map(|b| b.join(".venv").display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

/// The versions OVMS would serve: `model_version_policy` `all`, `specific` or `latest`
/// (default: the highest version only). A base path that cannot be read is an error naming it.
fn versions(base: &Path, policy: Option<&Value>) -> Result<Vec<i32>, String> {
    let mut found: Vec<i32> = std::fs::read_dir(base)
        .map_err(|e| {
            let why = if e.kind() == std::io::ErrorKind::NotFound {
                "does not exist".to_string()
            } else {
                format!("cannot be read ({e})")
            };
            format!(
                "base_path '{}' {why}: it must be the model's directory holding numeric version \
                 directories (e.g. '{}/1/' with the .dat and .lic files)",
                base.display(),
                base.display()
            )
        })?
        .flatten()
        .filter(|d| d.path().is_dir())
        .filter_map(|d| d.file_name().to_str()?.parse::<i32>().ok())
        .filter(|v| *v > 0)
        .collect();
    found.sort_unstable();
    let Some(policy) = policy else {
        return Ok(found.last().copied().into_iter().collect());
    };
    if policy.get("all").is_some() {
        return Ok(found);
    }
    if let Some(s) = policy.get("specific") {
        let wanted: Vec<i32> = s["versions"]
            .as_array()
            .ok_or("model_version_policy.specific.versions must be an array")?
            .iter()
            .filter_map(|v| v.as_i64().map(|v| v as i32))
            .collect();
        return Ok(found.into_iter().filter(|v| wanted.contains(v)).collect());
    }
    let n = policy["latest"]["num_versions"].as_u64().unwrap_or(1) as usize;
    Ok(found[found.len().saturating_sub(n)..].to_vec())
}

fn run(args: Args) -> Result<bool, String> {
    let text = std::fs::read_to_string(&args.config)
        .map_err(|e| format!("{}: {e}", args.config.display()))?;
    let config: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", args.config.display()))?;
    let dir = args.config.parent().unwrap_or(Path::new("."));
    let resolve = |p: &str| -> PathBuf {
        let p = Path::new(p);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            dir.join(p)
        }
    };
    let mut plaintext: BTreeMap<String, PathBuf> = BTreeMap::new();
    for p in &args.plaintext {
        let (name, path) = p
            .split_once('=')
            .ok_or(format!("--plaintext {p}: expected NAME=PATH"))?;
        plaintext.insert(name.to_string(), PathBuf::from(path));
    }
    let mut shapes: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for p in &args.shape {
        let bad = || format!("--shape {p}: expected NAME=D0,D1,...");
        let (name, dims) = p.split_once('=').ok_or_else(bad)?;
        let dims = dims
            .split(',')
            .map(|d| d.trim().parse::<i64>().map_err(|_| bad()))
            .collect::<Result<Vec<_>, _>>()?;
        shapes.insert(name.to_string(), dims);
    }

    let ov_lib = find_openvino_c(args.openvino_lib.clone())?;
    let t = Instant::now();
    openvino_sys::library::load_from(&ov_lib)
        .map_err(|e| format!("loading {}: {e}", ov_lib.display()))?;
    let mut core = Core::new().map_err(|e| format!("OpenVINO Core: {e}"))?;
    core.set_property(
        &DeviceType::from(args.device.as_str()),
        &RwPropertyKey::HintInferencePrecision,
        "f32",
    )
    .map_err(|e| format!("INFERENCE_PRECISION_HINT=f32: {e}"))?;
    println!(
        "openvino {} from {} ({:.1} ms), device {}, INFERENCE_PRECISION_HINT=f32",
        openvino::version().build_number,
        ov_lib.display(),
        ms(t),
        args.device
    );

    let mut loaders: BTreeMap<String, Loader> = BTreeMap::new();
    for entry in config["custom_loader_config_list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let c = &entry["config"];
        let name = c["loader_name"]
            .as_str()
            .ok_or("custom_loader_config_list: loader_name missing")?;
        let lib = resolve(c["library_path"].as_str().ok_or("library_path missing")?);
        let cfg = c["loader_config_file"]
            .as_str()
            .map(|p| resolve(p).display().to_string())
            .unwrap_or_default();
        let t = Instant::now();
        let loader = Loader::open(&lib, &cfg).map_err(|e| format!("loader {name}: {e}"))?;
        println!(
            "loader {name}: {} initialised ({:.1} ms)",
            lib.display(),
            ms(t)
        );
        loaders.insert(name.to_string(), loader);
    }

    let mut all_ok = true;
    let mut served = Vec::new();
    for entry in config["model_config_list"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        let c = &entry["config"];
        let name = c["name"]
            .as_str()
            .ok_or("model_config_list: name missing")?;
        let base = resolve(c["base_path"].as_str().ok_or("base_path missing")?);
        let options = &c["custom_loader_options"];
        let loader_name = options["loader_name"].as_str().ok_or(format!(
            "model {name}: custom_loader_options.loader_name missing"
        ))?;
        let loader = loaders
            .get(loader_name)
            .ok_or(format!("model {name}: unknown loader {loader_name}"))?;
        let dynamic = Dynamic {
            shape: shapes.get(name).cloned(),
            dim: args.dynamic_dim,
        };
        let policy = c.get("model_version_policy");
        let served_versions = match versions(&base, policy) {
            Ok(v) if v.is_empty() => {
                let any = versions(&base, Some(&serde_json::json!({"all": {}})))
                    .is_ok_and(|all| !all.is_empty());
                println!(
                    "model {name}: FAILED: no version to serve in base_path '{}': {}",
                    base.display(),
                    match policy {
                        Some(p) if any =>
                            format!("none of its versions matches model_version_policy {p}"),
                        _ => format!(
                            "it has no numeric version directory (OVMS serves numeric \
                             subdirectories such as '{}/1/' holding the .dat and .lic files)",
                            base.display()
                        ),
                    }
                );
                all_ok = false;
                continue;
            }
            Ok(v) => v,
            Err(e) => {
                println!("model {name}: FAILED: {e}");
                all_ok = false;
                continue;
            }
        };
        for version in served_versions {
            let tag = format!("model {name} version {version}");
            let total = Instant::now();
            let mut buffers = Buffers::default();
            let cname = CString::new(name).map_err(|e| e.to_string())?;
            let cbase = CString::new(base.display().to_string()).map_err(|e| e.to_string())?;
            let copts = CString::new(options.to_string()).map_err(|e| e.to_string())?;
            let mut model_type = 0;
            let t = Instant::now();
            // SAFETY: valid NUL-terminated strings; `buffers` outlives the call and is only
            // touched by alloc_buffer during it.
            let status = unsafe {
                (loader.load)(
                    loader.handle,
                    cname.as_ptr(),
                    cbase.as_ptr(),
                    version,
                    copts.as_ptr(),
                    alloc_buffer,
                    (&mut buffers as *mut Buffers).cast(),
                    &mut model_type,
                )
            };
            let plugin_ms = ms(t);
            if status != OVSA_MODEL_TYPE_IR && status != OVSA_MODEL_TYPE_ONNX {
                let mut why = read_error(loader.last_error);
                if let Some(e) = buffers.error.take() {
                    why = format!("{why} ({e})");
                }
                println!("{tag}: load FAILED (status {status}): {why}");
                all_ok = false;
                continue;
            }
            let kind = if status == OVSA_MODEL_TYPE_IR {
                "IR"
            } else {
                "ONNX"
            };
            let weights_len = buffers
                .weights
                .as_ref()
                .and_then(|w| w.get_byte_size().ok())
                .unwrap_or(0);
            println!(
                "{tag}: plugin load {plugin_ms:.1} ms ({kind}, model {} B, weights {weights_len} B; \
                 TPM attestation + license service + decryption into host buffers)",
                buffers.model.len()
            );
            let t = Instant::now();
            let weights = buffers.weights.take();
            let mut loaded =
                match compile(&mut core, &args.device, &buffers.model, weights, &dynamic) {
                    Ok(l) => l,
                    Err(e) => {
                        println!("{tag}: OpenVINO FAILED: {e}");
                        all_ok = false;
                        continue;
                    }
                };
            let compile_ms = ms(t);
            // The XML/ONNX text is parsed: wipe the host's plaintext copy of it.
            buffers.model.iter_mut().for_each(|b| *b = 0);
            println!(
                "{tag}: OpenVINO read + compile {compile_ms:.1} ms ({})",
                args.device
            );
            let t = Instant::now();
            let outputs = infer(&mut loaded).map_err(|e| format!("{tag}: inference: {e}"))?;
            let infer_ms = ms(t);
            println!("{tag}: inference {infer_ms:.1} ms");
            for o in &outputs {
                println!("{tag}: output {}", describe(o));
            }
            println!(
                "{tag}: time to first result {:.1} ms = plugin load {plugin_ms:.1} + OpenVINO \
                 read/compile {compile_ms:.1} + inference {infer_ms:.1}",
                ms(total)
            );
            if let Some(path) = plaintext.get(name) {
                let t = Instant::now();
                let mut plain = compile_file(&mut core, &args.device, path, &dynamic)
                    .map_err(|e| format!("plaintext {name}: {e}"))?;
                let plain_compile = ms(t);
                let t = Instant::now();
                let plain_out = infer(&mut plain).map_err(|e| format!("plaintext {name}: {e}"))?;
                let same = plain_out.len() == outputs.len()
                    && plain_out
                        .iter()
                        .zip(&outputs)
                        .all(|(a, b)| a.bytes == b.bytes && a.shape == b.shape);
                println!(
                    "{tag}: plaintext {} read + compile {plain_compile:.1} ms, inference {:.1} ms; \
                     outputs identical: {}",
                    path.display(),
                    ms(t),
                    if same { "yes" } else { "NO" }
                );
                if !same {
                    for o in &plain_out {
                        println!("{tag}: plaintext output {}", describe(o));
                    }
                    all_ok = false;
                }
            }
            served.push((loader_name.to_string(), name.to_string(), version, loaded));
        }
    }
    // Shutdown as OVMS does: unload every version, then free the loaders.
    for (loader_name, name, version, loaded) in served {
        drop(loaded);
        let loader = &loaders[&loader_name];
        let cname = CString::new(name).map_err(|e| e.to_string())?;
        // SAFETY: valid handle and NUL-terminated name.
        unsafe { (loader.unload)(loader.handle, cname.as_ptr(), version) };
    }
    drop(loaders);
    Ok(all_ok)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("ovsa-host-server: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with(versions: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for v in versions {
            std::fs::create_dir(d.path().join(v)).unwrap();
        }
        std::fs::write(d.path().join("7"), b"a file, not a version").unwrap();
        d
    }

    #[test]
    fn version_policies_follow_ovms() {
        let d = repo_with(&["1", "2", "10", "0", "x", "-3"]);
        let p = |j: &str| serde_json::from_str::<Value>(j).unwrap();
        assert_eq!(versions(d.path(), None).unwrap(), vec![10]);
        assert_eq!(
            versions(d.path(), Some(&p(r#"{"all":{}}"#))).unwrap(),
            vec![1, 2, 10]
        );
        assert_eq!(
            versions(d.path(), Some(&p(r#"{"latest":{"num_versions":2}}"#))).unwrap(),
            vec![2, 10]
        );
        assert_eq!(
            versions(d.path(), Some(&p(r#"{"specific":{"versions":[1,5,10]}}"#))).unwrap(),
            vec![1, 10]
        );
        assert!(versions(d.path(), Some(&p(r#"{"specific":{}}"#))).is_err());
        let e = versions(&d.path().join("missing"), None).unwrap_err();
        assert!(
            e.contains("missing' does not exist: it must be the model's directory"),
            "{e}"
        );
        assert!(versions(repo_with(&[]).path(), None).unwrap().is_empty());
    }

    #[test]
    fn fnv1a_matches_the_reference_vectors() {
        assert_eq!(fnv1a(b""), 0xcbf29ce484222325);
        assert_eq!(fnv1a(b"a"), 0xaf63dc4c8601ec8c);
    }
}
