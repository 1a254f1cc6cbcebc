//! A ROS 2 parameters file (`--params-file`), read the way rcl reads it.
//!
//! Owns finding a file's node sections (`name: ros__parameters: ...`, the
//! namespaces above a name joined with `/`) and the parameters a node takes
//! from it: every section that applies to it (`/**`, `**`, its name or its
//! fully qualified name), in file order, flattened to rcl's dotted names.
//! The node itself gets its parameters from rcl (and checks the file with
//! [`sections`]); the tools that run its pipeline without ROS read the same
//! file through [`parameters`]. What a parameter means is `config`'s.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use yaml_rust2::{Yaml, YamlLoader};

/// The node sections of the YAML `text`, each with its parameters; `None` when it is not YAML.
pub fn sections(text: &str) -> Option<Vec<(String, Yaml)>> {
    let docs = YamlLoader::load_from_str(text).ok()?;
    fn walk(prefix: &str, y: &Yaml, out: &mut Vec<(String, Yaml)>) {
        let Yaml::Hash(map) = y else { return };
        for (k, v) in map {
            let Some(k) = k.as_str() else { continue };
            if k == "ros__parameters" {
                out.push((prefix.to_string(), v.clone()));
            } else {
                walk(&if prefix.is_empty() { k.to_string() } else { format!("{prefix}/{k}") }, v, out);
            }
        }
    }
    let mut out = Vec::new();
    docs.iter().for_each(|d| walk("", d, &mut out));
    Some(out)
}

/// Whether a section named `section` applies to the node `name` (fully qualified: `fqn`), as r2r decides.
pub fn applies(section: &str, name: &str, fqn: &str) -> bool {
    matches!(section, "/**" | "**") || section == name || section == fqn
}

/// The parameters the file at `path` gives the node `name` (fully qualified:
/// `fqn`), by their dotted names; an error names the file and what is wrong.
pub fn parameters(path: &std::path::Path, name: &str, fqn: &str) -> Result<BTreeMap<String, Value>, String> {
    let file = path.display();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    let found = sections(&text).ok_or_else(|| format!("{file}: not a YAML parameters file"))?;
    let mut out = BTreeMap::new();
    let mut any = false;
    for (_, params) in found.iter().filter(|(s, _)| applies(s, name, fqn)) {
        any = true;
        flatten("", params, &mut out);
    }
    if !any {
        let names: Vec<&str> = found.iter().map(|(s, _)| s.as_str()).collect();
        return Err(format!("{file}: no section for {name} ('{name}', '{fqn}' or '/**'); sections found: {names:?}"));
    }
    Ok(out)
}

fn flatten(prefix: &str, y: &Yaml, out: &mut BTreeMap<String, Value>) {
    let join = |k: &str| if prefix.is_empty() { k.to_string() } else { format!("{prefix}.{k}") };
    match y {
        Yaml::Hash(map) => {
            for (k, v) in map {
                if let Some(k) = k.as_str() {
                    flatten(&join(k), v, out);
                }
            }
        }
        other => {
            if let Some(v) = scalar(other) {
                out.insert(prefix.to_string(), v);
            }
        }
    }
}

fn scalar(y: &Yaml) -> Option<Value> {
    Some(match y {
        Yaml::Boolean(b) => json!(b),
        Yaml::Integer(i) => json!(i),
        Yaml::Real(r) => json!(r.parse::<f64>().ok()?),
        Yaml::String(s) => json!(s),
        Yaml::Array(items) => Value::Array(items.iter().map(scalar).collect::<Option<_>>()?),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sections_for_this_node_are_merged_and_flattened() {
        let d = std::env::temp_dir().join(format!("params_file_{}.yaml", std::process::id()));
        std::fs::write(
            &d,
            "/**:\n  ros__parameters:\n    camera: {max_age_s: 0.4}\nother:\n  ros__parameters:\n    x: 1\n\
             mobile_vla:\n  ros__parameters:\n    limits:\n      max_velocity: [0.3, 0.2, 0.8]\n    policy: {shadow: true}\n",
        )
        .unwrap();
        let p = parameters(&d, "mobile_vla", "/mobile_vla").unwrap();
        assert_eq!(p["camera.max_age_s"], json!(0.4));
        assert_eq!(p["limits.max_velocity"], json!([0.3, 0.2, 0.8]));
        assert_eq!(p["policy.shadow"], json!(true));
        assert!(!p.contains_key("x"));
        // `/**` applies to every node; a file without it or the node's own section gives it nothing.
        assert_eq!(parameters(&d, "robot", "/robot").unwrap().keys().collect::<Vec<_>>(), ["camera.max_age_s"]);
        std::fs::write(&d, "other:\n  ros__parameters:\n    x: 1\n").unwrap();
        let e = parameters(&d, "mobile_vla", "/mobile_vla").unwrap_err();
        assert!(e.contains("no section for mobile_vla") && e.contains("other"), "{e}");
        std::fs::remove_file(&d).unwrap();
    }

    #[test]
    fn the_shipped_parameters_file_reads_as_the_node_defaults_say() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/mobile_vla.yaml");
        let p = parameters(&path, "mobile_vla", "/mobile_vla").unwrap();
        let c = crate::config::Config::from_params(&p).unwrap();
        assert_eq!(c.policy.hybrid.manifest, "models/hybrid.json");
        assert!(!c.policy.shadow);
    }
}
