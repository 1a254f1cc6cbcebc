//! Bridges rcl's parameters to the typed configuration.
//!
//! Owns the conversion of r2r parameter values into plain JSON values and the
//! node's own reading of its `--params-file` arguments, where rcl says too
//! little: a missing file, a list mixing integers and decimals (rcl's "Sequence
//! should be of same type" names a line, not the key), and a file none of
//! whose sections applies to this node (r2r skips it without a word, and the
//! node would run on its defaults). A file it cannot read as YAML is left to
//! rcl, whose reason is reported. It decides nothing about what a parameter
//! means: that is `mobile_vla_core::config`.

use std::collections::BTreeMap;
use std::path::Path;

use mobile_vla_core::config::params_file;
use mobile_vla_core::config::ConfigError;
use r2r::ParameterValue;
use serde_json::{json, Value};
use yaml_rust2::Yaml;

/// The node's parameter overrides (from `--params-file` and `-p`), flattened.
pub fn flat_params(node: &r2r::Node) -> BTreeMap<String, Value> {
    let params = node.params.lock().expect("parameter map poisoned");
    params.iter().filter_map(|(k, p)| to_json(&p.value).map(|v| (k.clone(), v))).collect()
}

fn to_json(v: &ParameterValue) -> Option<Value> {
    Some(match v {
        ParameterValue::NotSet => return None,
        ParameterValue::Bool(b) => json!(b),
        ParameterValue::Integer(i) => json!(i),
        ParameterValue::Double(d) => json!(d),
        ParameterValue::String(s) => json!(s),
        ParameterValue::BoolArray(a) => json!(a),
        ParameterValue::ByteArray(a) => json!(a),
        ParameterValue::IntegerArray(a) => json!(a),
        ParameterValue::DoubleArray(a) => json!(a),
        ParameterValue::StringArray(a) => json!(a),
    })
}

/// The `--params-file PATH` arguments inside `--ros-args`.
fn params_files<I: IntoIterator<Item = String>>(args: I) -> Vec<String> {
    let (mut files, mut in_ros_args) = (Vec::new(), false);
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ros-args" => in_ros_args = true,
            "--" => in_ros_args = false,
            "--params-file" if in_ros_args => files.push(args.next().unwrap_or_default()),
            _ => {}
        }
    }
    files
}

/// The node sections of the parameters file at `path`; `None` when it is not
/// YAML rcl could read (rcl reports why).
fn sections(path: &str) -> Option<Vec<(String, Yaml)>> {
    params_file::sections(&std::fs::read_to_string(path).ok()?)
}

/// The first list under `params` that mixes integers and decimals, as its
/// key and its values as written: rcl refuses the whole file for it.
fn mixed_list(prefix: &str, params: &Yaml) -> Option<(String, Vec<String>)> {
    match params {
        Yaml::Hash(map) => map.iter().find_map(|(k, v)| {
            let k = k.as_str().map(String::from).unwrap_or_else(|| format!("{k:?}"));
            mixed_list(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v)
        }),
        Yaml::Array(items)
            if items.iter().any(|i| matches!(i, Yaml::Integer(_)))
                && items.iter().any(|i| matches!(i, Yaml::Real(_))) =>
        {
            let written = items
                .iter()
                .map(|i| match i {
                    Yaml::Integer(n) => n.to_string(),
                    Yaml::Real(r) => r.clone(),
                    other => format!("{other:?}"),
                })
                .collect();
            Some((prefix.to_string(), written))
        }
        _ => None,
    }
}

/// Every `--params-file PATH` inside `--ros-args` must name an existing file
/// with no list that mixes integers and decimals (checked before rcl reads it).
pub fn check_params_files<I: IntoIterator<Item = String>>(args: I) -> Result<(), ConfigError> {
    for path in params_files(args) {
        if !Path::new(&path).is_file() {
            return Err(ConfigError {
                key: "--params-file".into(),
                value: format!("\"{path}\""),
                allowed: "an existing ROS 2 parameters YAML file".into(),
            });
        }
        for (section, params) in sections(&path).unwrap_or_default() {
            if let Some((key, written)) = mixed_list("", &params) {
                let decimals: Vec<String> = written
                    .iter()
                    .map(|v| if v.parse::<i64>().is_ok() { format!("{v}.0") } else { v.clone() })
                    .collect();
                return Err(ConfigError {
                    key,
                    value: format!("[{}]", written.join(", ")),
                    allowed: format!(
                        "a list of one type (in {path}, section '{section}'): rcl refuses a list that mixes integers \
                         and decimals; write every number as a decimal: [{}]",
                        decimals.join(", ")
                    ),
                });
            }
        }
    }
    Ok(())
}

/// What to say of each `--params-file` none of whose sections applies to
/// this node (`name`, fully qualified `fqn`): r2r applies a section named
/// `/**`, `**`, the node's name or its fully qualified name, and silently
/// skips every other one.
pub fn unmatched_params_files<I: IntoIterator<Item = String>>(args: I, name: &str, fqn: &str) -> Vec<String> {
    params_files(args)
        .into_iter()
        .filter_map(|path| {
            let found: Vec<String> = sections(&path)?.into_iter().map(|(s, _)| s).collect();
            if found.iter().any(|s| params_file::applies(s, name, fqn)) {
                return None;
            }
            let shown = if found.is_empty() { "none".to_string() } else { format!("'{}'", found.join("', '")) };
            Some(format!(
                "params file {path} has no section for this node, so none of its parameters apply: sections found: \
                 {shown}; this node reads a section named '{name}', '{fqn}' or '/**' (with ros__parameters under it)"
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn missing_params_file_is_named() {
        let e = check_params_files(args("node --ros-args --params-file /no/such.yaml")).unwrap_err();
        assert_eq!(e.key, "--params-file");
        assert!(e.value.contains("/no/such.yaml"));
    }

    #[test]
    fn params_file_outside_ros_args_is_not_ours_to_check() {
        check_params_files(args("node --params-file /no/such.yaml")).unwrap();
        check_params_files(args("node --ros-args -r a:=b -- --params-file /no")).unwrap();
    }

    fn file(name: &str, text: &str) -> String {
        let f = std::env::temp_dir().join(format!("mobile_vla_{}_{name}.yaml", std::process::id()));
        std::fs::write(&f, text).unwrap();
        f.display().to_string()
    }

    #[test]
    fn a_list_mixing_integers_and_decimals_is_named_with_the_fix() {
        let f = file("mixed", "mobile_vla:\n  ros__parameters:\n    limits:\n      max_velocity: [0.2, 0.2, 1]\n");
        let e = check_params_files(args(&format!("n --ros-args --params-file {f}"))).unwrap_err();
        assert_eq!(e.key, "limits.max_velocity");
        assert_eq!(e.value, "[0.2, 0.2, 1]");
        assert!(e.allowed.contains("[0.2, 0.2, 1.0]") && e.allowed.contains(&f), "{e}");
        let ok = file("ints", "mobile_vla:\n  ros__parameters:\n    a: [1, 2]\n    b: [0.5, 1.0]\n");
        check_params_files(args(&format!("n --ros-args --params-file {ok}"))).unwrap();
        // Not YAML that rcl reads: left to rcl, which names its reason.
        let bad = file("bad", "mobile_vla: [unclosed\n");
        check_params_files(args(&format!("n --ros-args --params-file {bad}"))).unwrap();
    }

    #[test]
    fn a_file_without_a_section_for_this_node_is_named_with_its_sections() {
        let other =
            file("other", "mobile_vla_node:\n  ros__parameters:\n    limits:\n      deadband: [0.1, 0.1, 0.1]\n");
        let w =
            unmatched_params_files(args(&format!("n --ros-args --params-file {other}")), "mobile_vla", "/r/mobile_vla");
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("'mobile_vla_node'") && w[0].contains(&other) && w[0].contains("'/r/mobile_vla'"),
            "{}",
            w[0]
        );
        for section in ["mobile_vla", "/r/mobile_vla", "/**", "r:\n  mobile_vla_other:\n    ros__parameters: {}\n/**"] {
            let f = file("match", &format!("{section}:\n  ros__parameters:\n    use_sim_time: false\n"));
            let w =
                unmatched_params_files(args(&format!("n --ros-args --params-file {f}")), "mobile_vla", "/r/mobile_vla");
            assert!(w.is_empty(), "{section}: {w:?}");
        }
    }

    #[test]
    fn existing_params_file_passes() {
        let f = std::env::temp_dir().join("mobile_vla_params_check.yaml");
        std::fs::write(&f, "{}").unwrap();
        check_params_files(args(&format!("n --ros-args --params-file {}", f.display()))).unwrap();
    }
}
