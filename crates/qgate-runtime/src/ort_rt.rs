//! ONNX Runtime through the `ort` crate, loaded at run time (`load-dynamic`): nothing is
//! downloaded at build time; the library comes from `--ort-lib`, `ORT_DYLIB_PATH` or the
//! `onnxruntime` package of the active Python environment.
//!
//! The library is located and its version checked here, before `ort` sees it: `ort`'s own
//! loader panics on some bad libraries, and its version error does not say how to fix it.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::ep::ExecutionProvider;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{DynValue, Tensor, TensorElementType, TensorRef, ValueType};
use qgate_core::{Array, ArrayData};

use crate::onnx_info::{model_info, read_proto};
use crate::{LoadOptions, Model, ModelInfo, ModelSpec, Provenance, RuntimeError};

/// The oldest ONNX Runtime minor version (1.x) this build can drive: the `ort` crate's API
/// level (`api-20` in Cargo.toml).
pub const MIN_ORT_MINOR: u32 = 20;

/// The onnxruntime version CI pins and tests against.
pub const TESTED_ORT_VERSION: &str = "1.31.1";

/// Where the library was found and which version it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrtLibrary {
    /// The shared library.
    pub path: PathBuf,
    /// `1.x.y`, when known before loading.
    pub version: Option<String>,
    /// How it was found.
    pub found_by: String,
}

fn install_hint() -> String {
    format!(
        "install it with `pip install onnxruntime=={TESTED_ORT_VERSION}` (or onnxruntime-gpu), or point --ort-lib / ORT_DYLIB_PATH at libonnxruntime.so"
    )
}

/// Finds the ONNX Runtime shared library: `explicit` (`--ort-lib`), then `env_path`
/// (`ORT_DYLIB_PATH`), then the `onnxruntime` package that `python` imports.
pub fn locate_onnxruntime(
    explicit: Option<&Path>,
    env_path: Option<&Path>,
    python: &str,
) -> Result<OrtLibrary, RuntimeError> {
    let unavailable = |reason: String| RuntimeError::OrtLibrary {
        reason,
        hint: install_hint(),
    };
    let lib = if let Some(p) = explicit {
        OrtLibrary {
            path: p.to_path_buf(),
            version: version_from_file_name(p),
            found_by: "--ort-lib".into(),
        }
    } else if let Some(p) = env_path.filter(|p| !p.as_os_str().is_empty()) {
        OrtLibrary {
            path: p.to_path_buf(),
            version: version_from_file_name(p),
            found_by: "ORT_DYLIB_PATH".into(),
        }
    } else {
        python_onnxruntime(python).map_err(unavailable)?
    };
    check_library(&lib).map_err(unavailable)?;
    Ok(lib)
}

/// `libonnxruntime.so.1.31.1` → `1.31.1`.
fn version_from_file_name(p: &Path) -> Option<String> {
    let name = p.file_name()?.to_str()?;
    let idx = name.find(".so.")?;
    let v = &name[idx + 4..];
    (v.split('.').count() >= 2 && v.split('.').all(|x| x.parse::<u32>().is_ok()))
        .then(|| v.to_string())
}

fn python_onnxruntime(python: &str) -> Result<OrtLibrary, String> {
    let script =
        "import os, onnxruntime as o; print(os.path.dirname(o.__file__)); print(o.__version__)";
    let out = std::process::Command::new(python)
        .args(["-c", script])
        .output()
        .map_err(|e| format!("no ONNX Runtime library given, and `{python}` could not be run to look for the onnxruntime package ({e})"))?;
    if !out.status.success() {
        return Err(format!(
            "no ONNX Runtime library given, and `{python}` has no onnxruntime package ({})",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("import failed")
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let dir = PathBuf::from(lines.next().unwrap_or_default()).join("capi");
    let version = lines.next().map(str::to_string);
    let mut libs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || n == "libonnxruntime.dylib"
                    || n == "onnxruntime.dll"
            })
        })
        .collect();
    libs.sort();
    let path = libs.pop().ok_or_else(|| {
        format!(
            "the onnxruntime package at {} holds no libonnxruntime",
            dir.display()
        )
    })?;
    Ok(OrtLibrary {
        version: version.or_else(|| version_from_file_name(&path)),
        path,
        found_by: format!("the onnxruntime package of `{python}`"),
    })
}

fn check_library(lib: &OrtLibrary) -> Result<(), String> {
    let meta = std::fs::metadata(&lib.path)
        .map_err(|e| format!("{} (from {}): {e}", lib.path.display(), lib.found_by))?;
    if !meta.is_file() {
        return Err(format!(
            "{} (from {}) is not a file",
            lib.path.display(),
            lib.found_by
        ));
    }
    let mut magic = [0u8; 4];
    use std::io::Read;
    let ok = std::fs::File::open(&lib.path)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok();
    let native = if cfg!(target_os = "linux") {
        magic == *b"\x7fELF"
    } else {
        true
    };
    if !ok || !native {
        return Err(format!(
            "{} (from {}) is not a shared library",
            lib.path.display(),
            lib.found_by
        ));
    }
    if let Some(v) = &lib.version {
        let minor = v
            .split('.')
            .nth(1)
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0);
        if minor < MIN_ORT_MINOR {
            return Err(format!(
                "{} is ONNX Runtime {v}; qgate needs 1.{MIN_ORT_MINOR} or newer",
                lib.path.display()
            ));
        }
    }
    Ok(())
}

struct OrtEnv {
    env: ort::environment::Environment,
    lib: OrtLibrary,
    version: String,
}

static ENV: OnceLock<Result<OrtEnv, String>> = OnceLock::new();

fn environment(lib: &OrtLibrary) -> Result<&'static OrtEnv, RuntimeError> {
    let env = ENV.get_or_init(|| {
        let builder = ort::init_from(&lib.path).map_err(|e| e.to_string())?;
        let env = builder
            .with_name("qgate")
            .build()
            .map_err(|e| e.to_string())?;
        Ok(OrtEnv {
            env,
            lib: lib.clone(),
            version: lib.version.clone().unwrap_or_else(|| "unknown".into()),
        })
    });
    match env {
        Ok(e) if e.lib.path != lib.path => Err(RuntimeError::OrtLibrary {
            reason: format!(
                "ONNX Runtime is already loaded from {}; one process cannot load a second library ({})",
                e.lib.path.display(),
                lib.path.display()
            ),
            hint: "use one --ort-lib for both sides".into(),
        }),
        Ok(e) => Ok(e),
        Err(reason) => Err(RuntimeError::OrtLibrary {
            reason: format!("{}: {reason}", lib.path.display()),
            hint: install_hint(),
        }),
    }
}

/// The ONNX Runtime environment qgate's sessions live in, from the library `opts` locate
/// (one per process). Benchmarks build a bare session in it to compare qgate's loop with.
pub fn ort_environment(
    opts: &LoadOptions,
) -> Result<&'static ort::environment::Environment, RuntimeError> {
    let lib = locate_onnxruntime(
        opts.ort_lib.as_deref(),
        opts.ort_env_path.as_deref(),
        &opts.python,
    )?;
    environment(&lib).map(|e| &e.env)
}

/// A model loaded in ONNX Runtime.
pub struct OrtModel {
    path: PathBuf,
    spec: String,
    info: ModelInfo,
    session: Session,
    /// The session's inputs (name, element type) and output names, read once at load.
    declared_inputs: Vec<(String, Option<TensorElementType>)>,
    output_names: Vec<String>,
    settings: BTreeMap<String, String>,
    version: String,
}

impl OrtModel {
    /// Creates a session for the model at `path`.
    pub fn load(
        path: &Path,
        spec: &ModelSpec,
        opts: &LoadOptions,
    ) -> Result<OrtModel, RuntimeError> {
        let (proto, file) = read_proto(path)?;
        let info = model_info(&proto, &file);
        let lib = locate_onnxruntime(
            opts.ort_lib.as_deref(),
            opts.ort_env_path.as_deref(),
            &opts.python,
        )?;
        let env = environment(&lib)?;
        let load_err = |message: String| RuntimeError::Load {
            path: path.to_path_buf(),
            runtime: "onnxruntime".into(),
            message,
        };
        let device = opts.device.clone().unwrap_or_else(|| "cpu".into());
        let threads = opts.threads.unwrap_or(1);
        let mut builder = Session::builder(&env.env)
            .map_err(|e| load_err(e.to_string()))?
            .with_intra_threads(threads)
            .map_err(|e| load_err(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| load_err(e.to_string()))?
            .with_optimization_level(if opts.ort_optimize {
                GraphOptimizationLevel::All
            } else {
                GraphOptimizationLevel::Disable
            })
            .map_err(|e| load_err(e.to_string()))?;
        let ep = execution_provider(&device, spec)?;
        builder = builder
            .with_execution_providers([ep])
            .map_err(|e| load_err(e.to_string()))?;
        let session = builder
            .commit_from_file(path)
            .map_err(|e| load_err(e.to_string()))?;
        let mut settings = BTreeMap::new();
        settings.insert("execution_provider".into(), device);
        settings.insert("intra_op_threads".into(), threads.to_string());
        settings.insert(
            "graph_optimization".into(),
            if opts.ort_optimize {
                "all"
            } else {
                "disabled (node by node)"
            }
            .into(),
        );
        settings.insert("library".into(), lib.path.display().to_string());
        let declared_inputs = session
            .inputs()
            .iter()
            .map(|o| (o.name().to_string(), o.dtype().tensor_type()))
            .collect();
        let output_names = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        Ok(OrtModel {
            path: path.to_path_buf(),
            spec: spec.raw.clone(),
            info,
            session,
            declared_inputs,
            output_names,
            settings,
            version: env.version.clone(),
        })
    }
}

fn execution_provider(
    device: &str,
    spec: &ModelSpec,
) -> Result<ort::ep::ExecutionProviderDispatch, RuntimeError> {
    use ort::ep;
    let missing = |name: &str, pkg: &str| RuntimeError::NotAvailable {
        spec: spec.raw.clone(),
        runtime: format!("device '{device}'"),
        hint: format!("the loaded onnxruntime library was built without {name}; install {pkg}"),
    };
    let available = |r: ort::Result<bool>| r.unwrap_or(false);
    Ok(match device {
        // The `ort` crate's CPU provider turns ONNX Runtime's memory arena off unless asked;
        // onnxruntime's own default (and Python's) is on. Without it every run allocates and
        // frees its work buffers (768 KiB, 320 KiB, 144 KiB for a small CNN), which costs
        // time and leaves the process's peak RSS to where glibc happens to place them (runs
        // of the same command varied by 20 %).
        "cpu" => ep::CPU::default()
            .with_arena_allocator(true)
            .build()
            .error_on_failure(),
        "cuda" => {
            if !available(ep::CUDA::is_available()) {
                return Err(missing("CUDAExecutionProvider", "onnxruntime-gpu"));
            }
            ep::CUDA::default().build().error_on_failure()
        }
        "tensorrt" => {
            if !available(ep::TensorRT::is_available()) {
                return Err(missing(
                    "TensorrtExecutionProvider",
                    "onnxruntime-gpu with TensorRT",
                ));
            }
            ep::TensorRT::default().build().error_on_failure()
        }
        "openvino" => {
            if !available(ep::OpenVINO::is_available()) {
                return Err(missing("OpenVINOExecutionProvider", "onnxruntime-openvino"));
            }
            ep::OpenVINO::default().build().error_on_failure()
        }
        other => {
            return Err(RuntimeError::NotAvailable {
                spec: spec.raw.clone(),
                runtime: format!("device '{other}'"),
                hint: "ONNX Runtime devices: cpu, cuda, tensorrt, openvino".into(),
            })
        }
    })
}

impl Model for OrtModel {
    fn info(&self) -> &ModelInfo {
        &self.info
    }

    fn provenance(&self) -> Provenance {
        Provenance {
            spec: self.spec.clone(),
            runtime: "onnxruntime".into(),
            runtime_version: self.version.clone(),
            settings: self.settings.clone(),
        }
    }

    fn run(&mut self, inputs: &[Array]) -> Result<Vec<Array>, RuntimeError> {
        let mut feed: Vec<(Cow<'static, str>, SessionInputValue<'_>)> = Vec::new();
        let declared = &self.declared_inputs;
        if inputs.len() != declared.len() {
            return Err(RuntimeError::Run {
                path: self.path.clone(),
                message: format!(
                    "{} input(s) given, the model declares {}",
                    inputs.len(),
                    declared.len()
                ),
            });
        }
        for (a, (name, ty)) in inputs.iter().zip(declared) {
            let bad = |message| RuntimeError::Input {
                path: self.path.clone(),
                name: name.clone(),
                message,
            };
            // float32 data is lent to the session as it is: no copy of the batch.
            if let (Some(TensorElementType::Float32) | None, ArrayData::F32(v)) = (ty, &a.data) {
                let shape: Vec<i64> = a.shape.iter().map(|&d| d as i64).collect();
                let view = TensorRef::from_array_view((shape, v.as_slice()))
                    .map_err(|e| bad(e.to_string()))?;
                feed.push((Cow::Owned(name.clone()), view.into()));
                continue;
            }
            let value = to_value(a, *ty).map_err(bad)?;
            feed.push((Cow::Owned(name.clone()), value.into()));
        }
        let path = self.path.clone();
        let outputs = self.session.run(feed).map_err(|e| RuntimeError::Run {
            path: path.clone(),
            message: e.to_string(),
        })?;
        self.output_names
            .iter()
            .map(|n| {
                let v = outputs.get(n).ok_or_else(|| RuntimeError::Run {
                    path: path.clone(),
                    message: format!("output '{n}' missing from the results"),
                })?;
                from_value(v).map_err(|message| RuntimeError::Run {
                    path: path.clone(),
                    message: format!("output '{n}': {message}"),
                })
            })
            .collect()
    }
}

fn to_value(a: &Array, ty: Option<TensorElementType>) -> Result<DynValue, String> {
    let shape: Vec<i64> = a.shape.iter().map(|&d| d as i64).collect();
    let err = |e: ort::Error| e.to_string();
    let f64s = || {
        a.to_f64()
            .ok_or_else(|| format!("the data holds {}, expected numbers", a.elem_type()))
    };
    let ints = || {
        a.data
            .to_i64_whole()
            .map_err(|e| format!("the model expects integers but {e}"))
    };
    Ok(match ty {
        Some(TensorElementType::Float32) | None => {
            let v = a
                .to_f32()
                .ok_or_else(|| format!("the data holds {}, expected numbers", a.elem_type()))?;
            Tensor::from_array((shape, v)).map_err(err)?.into_dyn()
        }
        Some(TensorElementType::Float64) => Tensor::from_array((shape, f64s()?))
            .map_err(err)?
            .into_dyn(),
        Some(TensorElementType::Int64) => Tensor::from_array((shape, ints()?))
            .map_err(err)?
            .into_dyn(),
        Some(TensorElementType::Int32) => {
            let v: Vec<i32> = ints()?.into_iter().map(|x| x as i32).collect();
            Tensor::from_array((shape, v)).map_err(err)?.into_dyn()
        }
        Some(TensorElementType::Uint8) => {
            let v: Vec<u8> = ints()?.into_iter().map(|x| x as u8).collect();
            Tensor::from_array((shape, v)).map_err(err)?.into_dyn()
        }
        Some(TensorElementType::Int8) => {
            let v: Vec<i8> = ints()?.into_iter().map(|x| x as i8).collect();
            Tensor::from_array((shape, v)).map_err(err)?.into_dyn()
        }
        Some(TensorElementType::Bool) => {
            let v: Vec<bool> = ints()?.into_iter().map(|x| x != 0).collect();
            Tensor::from_array((shape, v)).map_err(err)?.into_dyn()
        }
        Some(other) => {
            return Err(format!(
                "input element type {other:?} is not supported by qgate's ONNX Runtime backend"
            ))
        }
    })
}

fn from_value(v: &DynValue) -> Result<Array, String> {
    let ValueType::Tensor { ty, .. } = v.dtype() else {
        return Err(format!("is a {}, not a tensor", v.dtype()));
    };
    macro_rules! grab {
        ($t:ty, $variant:ident) => {{
            let (shape, data) = v.try_extract_tensor::<$t>().map_err(|e| e.to_string())?;
            let shape: Vec<usize> = shape.iter().map(|&d| d as usize).collect();
            Array::new(shape, ArrayData::$variant(data.to_vec())).map_err(|e| e.to_string())?
        }};
    }
    Ok(match ty {
        TensorElementType::Float32 => grab!(f32, F32),
        TensorElementType::Float64 => grab!(f64, F64),
        TensorElementType::Int64 => grab!(i64, I64),
        TensorElementType::Int32 => grab!(i32, I32),
        TensorElementType::Int8 => grab!(i8, I8),
        TensorElementType::Uint8 => grab!(u8, U8),
        TensorElementType::Bool => grab!(bool, Bool),
        other => return Err(format!("element type {other:?} is not supported")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_from_library_file_name() {
        assert_eq!(
            version_from_file_name(Path::new("/x/libonnxruntime.so.1.31.1")).as_deref(),
            Some("1.31.1")
        );
        assert_eq!(version_from_file_name(Path::new("libonnxruntime.so")), None);
    }

    #[test]
    fn a_missing_library_says_how_to_get_one() {
        let err = locate_onnxruntime(
            Some(Path::new("/nonexistent/libonnxruntime.so.1.31.1")),
            None,
            "python3",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/nonexistent/libonnxruntime.so")
                && err.contains("pip install onnxruntime=="),
            "{err}"
        );
    }

    #[test]
    fn an_old_library_is_refused_before_loading() {
        let dir = std::env::temp_dir().join(format!("qgate-ort-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = dir.join("libonnxruntime.so.1.10.0");
        std::fs::write(&fake, b"\x7fELF not really").unwrap();
        let err = locate_onnxruntime(Some(&fake), None, "python3")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("1.10.0") && err.contains("1.20 or newer"),
            "{err}"
        );
        let not_lib = dir.join("libonnxruntime.so.1.31.1");
        std::fs::write(&not_lib, b"hello").unwrap();
        let err = locate_onnxruntime(Some(&not_lib), None, "python3")
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a shared library"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
