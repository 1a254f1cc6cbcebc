//! The process's ONNX Runtime: which library is loaded, once, and what it is.
//!
//! Owns loading `libonnxruntime.so` (the configured path, else
//! `$ORT_DYLIB_PATH`, else the dynamic loader's search path) before any other
//! ONNX Runtime call, and reporting what was really loaded: the version the
//! library states and the file it came from, so an operator sees at once
//! whether the node runs the TensorRT-enabled build they pointed it at. A
//! library that is missing or too old is an error naming the path and the
//! reason; it never panics. ONNX Runtime allows one environment per process:
//! later calls share the first result, whatever path they pass.

use std::ffi::{c_char, c_void, CStr, CString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::PolicyError;

/// What ONNX Runtime the process runs.
#[derive(Debug, Clone, PartialEq)]
pub struct RuntimeInfo {
    /// As the library states it (`OrtGetApiBase()->GetVersionString()`), e.g. "1.32.0".
    pub version: String,
    /// The file the dynamic loader mapped.
    pub library: PathBuf,
}

impl std::fmt::Display for RuntimeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ONNX Runtime {} ({})", self.version, self.library.display())
    }
}

#[derive(Clone)]
pub struct Runtime {
    pub env: ort::environment::Environment,
    pub info: RuntimeInfo,
}

/// Loads ONNX Runtime on first use and creates the environment; later calls share the first result.
pub fn init_runtime(library: Option<&Path>) -> Result<Runtime, PolicyError> {
    static RUNTIME: OnceLock<Result<Runtime, PolicyError>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let path: PathBuf = match library {
                Some(p) => p.to_path_buf(),
                None => {
                    std::env::var_os("ORT_DYLIB_PATH").map(PathBuf::from).unwrap_or_else(|| "libonnxruntime.so".into())
                }
            };
            let env = ort::init_from(&path)
                .map_err(|e| PolicyError::Runtime(format!("{}: {e}", path.display())))?
                .with_name("mobile_vla")
                .build()
                .map_err(|e| PolicyError::Runtime(format!("{}: {e}", path.display())))?;
            let info = loaded(&path).unwrap_or(RuntimeInfo { version: "unknown".into(), library: path });
            Ok(Runtime { env, info })
        })
        .clone()
}

/// The OrtApiBase table every ONNX Runtime exports (onnxruntime_c_api.h).
#[repr(C)]
struct OrtApiBase {
    get_api: unsafe extern "C" fn(u32) -> *const c_void,
    get_version_string: unsafe extern "C" fn() -> *const c_char,
}

/// Asks the library `ort` loaded from `path` for its version, and the loader for its file.
fn loaded(path: &Path) -> Option<RuntimeInfo> {
    let name = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: RTLD_NOLOAD only returns a handle to a library already mapped
    // (the one ort loaded by this name) and loads nothing; OrtGetApiBase is the
    // C API's entry point, returning a pointer to a static table whose
    // GetVersionString returns a static NUL-terminated string; dladdr only
    // reads the loader's tables. The handle's extra reference is released.
    unsafe {
        let handle = libc::dlopen(name.as_ptr(), libc::RTLD_LAZY | libc::RTLD_NOLOAD);
        if handle.is_null() {
            return None;
        }
        let symbol = libc::dlsym(handle, c"OrtGetApiBase".as_ptr());
        let info = (!symbol.is_null()).then(|| {
            let get_base: unsafe extern "C" fn() -> *const OrtApiBase = std::mem::transmute(symbol);
            let base = get_base();
            let version = if base.is_null() {
                "unknown".to_string()
            } else {
                CStr::from_ptr(((*base).get_version_string)()).to_string_lossy().into_owned()
            };
            let mut dl: libc::Dl_info = std::mem::zeroed();
            let library = if libc::dladdr(symbol, &mut dl) != 0 && !dl.dli_fname.is_null() {
                PathBuf::from(CStr::from_ptr(dl.dli_fname).to_string_lossy().into_owned())
            } else {
                path.to_path_buf()
            };
            RuntimeInfo { version, library }
        });
        libc::dlclose(handle);
        info
    }
}
