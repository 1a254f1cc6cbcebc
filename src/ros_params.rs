//! Bridges rcl's parameters to the typed configuration.
//!
//! Owns the conversion of r2r parameter values into plain JSON values and the
//! early check of `--params-file` arguments (rcl refuses a missing file with no
//! useful message). It decides nothing about what a parameter means: that is
//! `mobile_vla_core::config`.

use std::collections::BTreeMap;
use std::path::Path;

use mobile_vla_core::config::ConfigError;
use r2r::ParameterValue;
use serde_json::{json, Value};

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

/// Every `--params-file PATH` inside `--ros-args` must name an existing file.
pub fn check_params_files<I: IntoIterator<Item = String>>(args: I) -> Result<(), ConfigError> {
    let mut in_ros_args = false;
    let mut args = args.into_iter();
    while let Some(a) = args.next() {
        match a.as_str() {
            "--ros-args" => in_ros_args = true,
            "--" => in_ros_args = false,
            "--params-file" if in_ros_args => {
                let path = args.next().unwrap_or_default();
                if !Path::new(&path).is_file() {
                    return Err(ConfigError {
                        key: "--params-file".into(),
                        value: format!("\"{path}\""),
                        allowed: "an existing ROS 2 parameters YAML file".into(),
                    });
                }
            }
            _ => {}
        }
    }
    Ok(())
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

    #[test]
    fn existing_params_file_passes() {
        let f = std::env::temp_dir().join("mobile_vla_params_check.yaml");
        std::fs::write(&f, "{}").unwrap();
        check_params_files(args(&format!("n --ros-args --params-file {}", f.display()))).unwrap();
    }
}
