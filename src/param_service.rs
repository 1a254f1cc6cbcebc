//! The node's parameters over ROS: the `rcl_interfaces` services and `/parameter_events`.
//!
//! Owns the six parameter services `ros2 param` uses (`~/list_parameters`,
//! `~/describe_parameters`, `~/get_parameters`, `~/get_parameter_types`,
//! `~/set_parameters`, `~/set_parameters_atomically`), the conversions between
//! `rcl_interfaces` values and the configuration's, and the events published
//! on `/parameter_events`. What a parameter means, whether it may change and
//! whether a value is valid is decided by `mobile_vla_core::params`; the shell
//! applies what it accepted.

use futures::stream::{BoxStream, StreamExt};
use mobile_vla_core::config::schema::Range;
use mobile_vla_core::config::Config;
use mobile_vla_core::params::{Change, ParamTable};
use r2r::rcl_interfaces::{msg as rcl, srv};
use r2r::{QosProfile, ServiceRequest};
use serde_json::{json, Value};
use tracing::warn;

/// A parameter request the shell must answer.
pub enum Request {
    List(ServiceRequest<srv::ListParameters::Service>),
    Describe(ServiceRequest<srv::DescribeParameters::Service>),
    Get(ServiceRequest<srv::GetParameters::Service>),
    Types(ServiceRequest<srv::GetParameterTypes::Service>),
    Set(ServiceRequest<srv::SetParameters::Service>),
    SetAtomically(ServiceRequest<srv::SetParametersAtomically::Service>),
}

pub struct ParamServices {
    pub requests: BoxStream<'static, Request>,
    events: r2r::Publisher<rcl::ParameterEvent>,
    node_name: String,
}

impl ParamServices {
    pub fn new(node: &mut r2r::Node) -> anyhow::Result<Self> {
        let qos = QosProfile::services_default;
        let streams: Vec<BoxStream<'static, Request>> = vec![
            node.create_service::<srv::ListParameters::Service>("~/list_parameters", qos())?.map(Request::List).boxed(),
            node.create_service::<srv::DescribeParameters::Service>("~/describe_parameters", qos())?
                .map(Request::Describe)
                .boxed(),
            node.create_service::<srv::GetParameters::Service>("~/get_parameters", qos())?.map(Request::Get).boxed(),
            node.create_service::<srv::GetParameterTypes::Service>("~/get_parameter_types", qos())?
                .map(Request::Types)
                .boxed(),
            node.create_service::<srv::SetParameters::Service>("~/set_parameters", qos())?.map(Request::Set).boxed(),
            node.create_service::<srv::SetParametersAtomically::Service>("~/set_parameters_atomically", qos())?
                .map(Request::SetAtomically)
                .boxed(),
        ];
        // rclcpp's parameter-events QoS: reliable, deep, volatile.
        let events = node.create_publisher("/parameter_events", QosProfile::default().reliable().keep_last(1000))?;
        let node_name = node.fully_qualified_name()?;
        Ok(Self { requests: futures::stream::select_all(streams).boxed(), events, node_name })
    }

    /// At start, as rclcpp does: every parameter as a new one.
    pub fn announce(&self, table: &ParamTable, stamp: r2r::builtin_interfaces::msg::Time) {
        let new_parameters = table
            .names()
            .map(|n| rcl::Parameter { name: n.into(), value: to_msg(table.get(n).expect("listed")) })
            .collect();
        self.publish(rcl::ParameterEvent { stamp, node: self.node_name.clone(), new_parameters, ..Default::default() });
    }

    fn changed(&self, changes: &[Change], stamp: r2r::builtin_interfaces::msg::Time) {
        if changes.is_empty() {
            return;
        }
        let changed_parameters =
            changes.iter().map(|c| rcl::Parameter { name: c.name.clone(), value: to_msg(&c.new) }).collect();
        self.publish(rcl::ParameterEvent {
            stamp,
            node: self.node_name.clone(),
            changed_parameters,
            ..Default::default()
        });
    }

    fn publish(&self, e: rcl::ParameterEvent) {
        if let Err(e) = self.events.publish(&e) {
            warn!("publishing /parameter_events failed: {e}");
        }
    }

    /// Answers one request; returns what a set changed (for the shell to apply).
    /// `veto` gives the running node's reason against a new configuration.
    pub fn handle(
        &self,
        req: Request,
        table: &mut ParamTable,
        veto: impl Fn(&Config) -> Option<String>,
        stamp: r2r::builtin_interfaces::msg::Time,
    ) -> Vec<Change> {
        let mut applied = Vec::new();
        let sent = match req {
            Request::List(r) => {
                let result = list(table, &r.message.prefixes, r.message.depth);
                r.respond(srv::ListParameters::Response { result })
            }
            Request::Describe(r) => {
                let descriptors = r.message.names.iter().map(|n| describe(table, n)).collect();
                r.respond(srv::DescribeParameters::Response { descriptors })
            }
            Request::Get(r) => {
                let values = r.message.names.iter().map(|n| table.get(n).map(to_msg).unwrap_or_default()).collect();
                r.respond(srv::GetParameters::Response { values })
            }
            Request::Types(r) => {
                let types = r.message.names.iter().map(|n| table.get(n).map_or(0, |v| to_msg(v).type_)).collect();
                r.respond(srv::GetParameterTypes::Response { types })
            }
            Request::Set(r) => {
                // Each parameter on its own, as rclcpp's set_parameters does.
                let results = r
                    .message
                    .parameters
                    .iter()
                    .map(|p| match table.set_unless(&[(p.name.clone(), from_msg(&p.value))], &veto) {
                        Ok(changes) => {
                            applied.extend(changes);
                            rcl::SetParametersResult { successful: true, reason: String::new() }
                        }
                        Err(reason) => rcl::SetParametersResult { successful: false, reason },
                    })
                    .collect();
                r.respond(srv::SetParameters::Response { results })
            }
            Request::SetAtomically(r) => {
                let changes: Vec<(String, Value)> =
                    r.message.parameters.iter().map(|p| (p.name.clone(), from_msg(&p.value))).collect();
                let result = match table.set_unless(&changes, &veto) {
                    Ok(changes) => {
                        applied.extend(changes);
                        rcl::SetParametersResult { successful: true, reason: String::new() }
                    }
                    Err(reason) => rcl::SetParametersResult { successful: false, reason },
                };
                r.respond(srv::SetParametersAtomically::Response { result })
            }
        };
        if let Err(e) = sent {
            warn!("answering a parameter request failed: {e}");
        }
        self.changed(&applied, stamp);
        applied
    }
}

/// `ros2 param list` semantics: names under the prefixes, `depth` separators deep (0: all).
fn list(table: &ParamTable, prefixes: &[String], depth: u64) -> rcl::ListParametersResult {
    let deep_enough = |rest: &str| depth == 0 || (rest.matches('.').count() as u64) < depth;
    let mut result = rcl::ListParametersResult::default();
    for name in table.names() {
        let wanted = if prefixes.is_empty() {
            deep_enough(name)
        } else {
            prefixes.iter().any(|p| name == p || name.strip_prefix(&format!("{p}.")).is_some_and(deep_enough))
        };
        if !wanted {
            continue;
        }
        result.names.push(name.to_string());
        if let Some((prefix, _)) = name.rsplit_once('.') {
            if !result.prefixes.iter().any(|p| p == prefix) {
                result.prefixes.push(prefix.to_string());
            }
        }
    }
    result
}

fn describe(table: &ParamTable, name: &str) -> rcl::ParameterDescriptor {
    let Some(d) = table.descriptor(name) else {
        return rcl::ParameterDescriptor { name: name.into(), ..Default::default() };
    };
    let mut out = rcl::ParameterDescriptor {
        name: name.into(),
        type_: table.get(name).map_or(0, |v| to_msg(v).type_),
        description: d.description,
        read_only: d.read_only,
        ..Default::default()
    };
    match d.range {
        Some(Range::Float { from, to }) => {
            out.floating_point_range = vec![rcl::FloatingPointRange { from_value: from, to_value: to, step: 0.0 }]
        }
        Some(Range::Integer { from, to }) => {
            out.integer_range = vec![rcl::IntegerRange { from_value: from, to_value: to, step: 1 }]
        }
        None => {}
    }
    out
}

// rcl_interfaces/msg/ParameterType.
const BOOL: u8 = 1;
const INTEGER: u8 = 2;
const DOUBLE: u8 = 3;
const STRING: u8 = 4;
const BOOL_ARRAY: u8 = 6;
const INTEGER_ARRAY: u8 = 7;
const DOUBLE_ARRAY: u8 = 8;
const STRING_ARRAY: u8 = 9;

pub fn to_msg(v: &Value) -> rcl::ParameterValue {
    let mut m = rcl::ParameterValue::default();
    match v {
        Value::Bool(b) => (m.type_, m.bool_value) = (BOOL, *b),
        Value::Number(n) if n.is_i64() || n.is_u64() => {
            (m.type_, m.integer_value) = (INTEGER, n.as_i64().unwrap_or(i64::MAX))
        }
        Value::Number(n) => (m.type_, m.double_value) = (DOUBLE, n.as_f64().unwrap_or(f64::NAN)),
        Value::String(s) => (m.type_, m.string_value) = (STRING, s.clone()),
        Value::Array(a) if a.iter().all(Value::is_boolean) && !a.is_empty() => {
            (m.type_, m.bool_array_value) = (BOOL_ARRAY, a.iter().filter_map(Value::as_bool).collect())
        }
        Value::Array(a) if a.iter().all(|x| x.is_i64()) && !a.is_empty() => {
            (m.type_, m.integer_array_value) = (INTEGER_ARRAY, a.iter().filter_map(Value::as_i64).collect())
        }
        Value::Array(a) if a.iter().all(Value::is_number) && !a.is_empty() => {
            (m.type_, m.double_array_value) = (DOUBLE_ARRAY, a.iter().filter_map(Value::as_f64).collect())
        }
        Value::Array(a) => {
            (m.type_, m.string_array_value) =
                (STRING_ARRAY, a.iter().map(|x| x.as_str().map_or_else(|| x.to_string(), str::to_string)).collect())
        }
        Value::Null | Value::Object(_) => {}
    }
    m
}

pub fn from_msg(m: &rcl::ParameterValue) -> Value {
    match m.type_ {
        BOOL => json!(m.bool_value),
        INTEGER => json!(m.integer_value),
        DOUBLE => json!(m.double_value),
        STRING => json!(m.string_value),
        BOOL_ARRAY => json!(m.bool_array_value),
        INTEGER_ARRAY => json!(m.integer_array_value),
        DOUBLE_ARRAY => json!(m.double_array_value),
        STRING_ARRAY => json!(m.string_array_value),
        _ => Value::Null,
    }
}
