//! The files the parameters name: the policies' manifests, resolved against the package's share directory.
//!
//! Owns resolving a file parameter (absolute, `~/`, or relative to the share
//! directory) and checking that it exists; reading a manifest is the policy
//! crate's.

use std::path::{Path, PathBuf};

use super::{err, Config, ConfigError};

impl Config {
    /// Checks that both manifests exist, resolving
    /// relative paths against `share_dir`; returns the resolved manifests.
    pub fn resolve_files(&self, share_dir: &Path) -> Result<(PathBuf, PathBuf), ConfigError> {
        let hybrid = resolve_existing_file("policy.hybrid.manifest", &self.policy.hybrid.manifest, share_dir)?;
        let pure = resolve_existing_file("policy.pure.manifest", &self.policy.pure.manifest, share_dir)?;
        // policy.onnxruntime_library is not checked here: a missing or
        // incompatible library is reported by the load itself (POLICY NOT LOADED,
        // the robot held still), like a missing model.
        Ok((hybrid, pure))
    }
}

/// `~/x` -> `$HOME/x`; anything else unchanged.
pub fn expand_home(path: &str) -> PathBuf {
    match (path.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(path),
    }
}

/// Resolves a file parameter: absolute paths as they are, relative ones against
/// `base` (the package's share directory). The file must exist.
pub fn resolve_existing_file(key: &str, value: &str, base: &Path) -> Result<PathBuf, ConfigError> {
    let p = Path::new(value);
    let path = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
    if path.is_file() {
        Ok(path)
    } else {
        Err(err(key, format!("\"{value}\""), format!("an existing file (looked for {})", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn params(pairs: &[(&str, serde_json::Value)]) -> BTreeMap<String, serde_json::Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }

    #[test]
    fn manifests_resolve_against_the_share_directory() {
        let share = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let (h, p) = Config::default().resolve_files(&share).unwrap();
        assert!(h.ends_with("models/hybrid.json") && p.ends_with("models/pure.json"));
        let c = Config::from_params(&params(&[("policy.pure.manifest", json!("models/none.json"))])).unwrap();
        assert_eq!(c.resolve_files(&share).unwrap_err().key, "policy.pure.manifest");
    }

    #[test]
    fn missing_files_are_refused_with_the_path_looked_for() {
        let dir = std::env::temp_dir();
        let e = resolve_existing_file("policy.hybrid.manifest", "nope/none.json", &dir).unwrap_err();
        assert_eq!(e.key, "policy.hybrid.manifest");
        assert!(e.allowed.contains("none.json"), "{e}");
    }
}
