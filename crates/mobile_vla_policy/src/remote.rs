//! The remote backend: a stage's graph served by a KServe v2 inference server (NVIDIA Triton) over gRPC.
//!
//! Owns the link to one served model: the connection (TLS optional), the
//! model's declared inputs and outputs read from the server's model metadata
//! (so `contract` checks them exactly as a local graph's), and one request
//! per run with its deadline. Every answer is checked before it leaves this
//! module: each wanted output present, of its declared type, of a shape
//! that fits its declaration, with as many bytes as that shape holds. A
//! deadline that passes, a refused or reset connection, a model the server
//! does not serve (now) are [`PolicyError::Unreachable`]; an error the
//! server returns or an answer that fails a check is [`PolicyError::Remote`].
//! It never retries a request and never decides what a failure means for
//! the robot: that is the watchdog's. The server stays stateless: the
//! recurrent state and the windows travel in each request as tensors.

use std::time::{Duration, Instant};

use half::f16;
use ort::session::RunOptions;
use ort::value::TensorElementType;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::backend::{Backend, Feed, Port, Tensor, ValueInfo, Values, View};
use crate::PolicyError;
use mobile_vla_core::config::RemoteConfig;

/// The client generated from `proto/kserve_v2.proto`.
pub mod proto {
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_client::GrpcInferenceServiceClient as Client;
use proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use proto::{ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelReadyRequest, ServerMetadataRequest};

/// How long connecting (and reading the model) may take.
const CONNECT_BOUND: Duration = Duration::from_secs(2);
/// How long the first run may take: a server's first request to a model can
/// be slow (lazy initialisation), and it is the warm-up, not a frame. With
/// the connection, under the 5 s the node gives a stopping worker.
const FIRST_RUN_DEADLINE: Duration = Duration::from_millis(2500);

/// The name a stage is served under on the server (what
/// `scripts/triton_repository.py` writes): `<policy>_<stage>`, the policy's
/// own name for a one-graph (v1) manifest, whose stage is named after it,
/// or the manifest's `served_as`.
pub fn served_name(policy: &str, stage: &str, served_as: Option<&str>) -> String {
    match served_as {
        Some(name) => name.to_string(),
        None if stage == policy => policy.to_string(),
        None => format!("{policy}_{stage}"),
    }
}

/// One stage's graph on an inference server.
pub struct RemoteStage {
    /// Drives the gRPC client on the inference thread that calls [`Backend::run`].
    runtime: tokio::runtime::Runtime,
    client: Client<Channel>,
    model: String,
    version: String,
    deadline: Duration,
    first_run: bool,
    inputs: Vec<Port>,
    outputs: Vec<Port>,
    /// For logs and status: `hybrid_policy (version 1) on triton 2.52.0 at http://gpu:8001`.
    description: String,
}

impl RemoteStage {
    /// Connects to `cfg.url`, checks that `model` is ready and reads its
    /// inputs and outputs. A server that cannot be reached (or does not serve
    /// the model yet) is [`PolicyError::Unreachable`]; a bad URL or TLS file
    /// is [`PolicyError::Load`].
    pub fn connect(cfg: &RemoteConfig, model: &str) -> Result<RemoteStage, PolicyError> {
        Self::connect_within(cfg, model, CONNECT_BOUND)
    }

    /// [`RemoteStage::connect`], the server given `bound` to answer.
    fn connect_within(cfg: &RemoteConfig, model: &str, bound: Duration) -> Result<RemoteStage, PolicyError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PolicyError::Load(format!("remote stage '{model}': {e}")))?;
        let deadline = Duration::from_secs_f64(cfg.deadline_s);
        let endpoint = endpoint(cfg, bound)?;
        let channel = {
            let _enter = runtime.enter();
            endpoint.connect_lazy()
        };
        let mut client = Client::new(channel);
        let at = |e: tonic::Status| unreachable_or_remote(&cfg.url, model, e, bound);
        // One bound for all of it: a server that accepts connections but never
        // answers (stopped) must not hang the load.
        let asked = runtime.block_on(async {
            tokio::time::timeout(bound, async {
                let server = client.server_metadata(ServerMetadataRequest {}).await.map_err(at)?.into_inner();
                let ready = client
                    .model_ready(ModelReadyRequest { name: model.into(), version: cfg.model_version.clone() })
                    .await
                    .map_err(at)?
                    .into_inner()
                    .ready;
                if !ready {
                    return Ok((server, None));
                }
                let meta = client
                    .model_metadata(ModelMetadataRequest { name: model.into(), version: cfg.model_version.clone() })
                    .await
                    .map_err(at)?
                    .into_inner();
                Ok::<_, PolicyError>((server, Some(meta)))
            })
            .await
        });
        let (server, meta) = asked.map_err(|_| {
            PolicyError::Unreachable(format!(
                "{} (model '{model}'): no answer within {:.1} s",
                cfg.url,
                bound.as_secs_f64()
            ))
        })??;
        let Some(meta) = meta else {
            return Err(PolicyError::Unreachable(format!(
                "{} at {}: model '{model}'{} is not ready on the server",
                server.name,
                cfg.url,
                version_note(&cfg.model_version)
            )));
        };
        let ports = |list: &[proto::model_metadata_response::TensorMetadata]| {
            list.iter().map(|t| Port { name: t.name.clone(), info: value_info(&t.datatype, &t.shape) }).collect()
        };
        // One version for every request, the one checked here: the server's
        // version policy must not swap the model under the robot's state.
        let version = match (cfg.model_version.as_str(), meta.versions.as_slice()) {
            ("", [only]) => only.clone(),
            ("", []) => {
                return Err(PolicyError::Unreachable(format!(
                    "{} at {}: model '{model}' has no version ready",
                    server.name, cfg.url
                )))
            }
            ("", many) => {
                return Err(PolicyError::Load(format!(
                    "{} at {}: model '{model}' serves versions {many:?}: set policy.*.remote.model_version to the one \
                     this manifest describes",
                    server.name, cfg.url
                )))
            }
            (pinned, _) => pinned.to_string(),
        };
        let description = format!("{model} (version {version}) on {} {} at {}", server.name, server.version, cfg.url);
        Ok(RemoteStage {
            runtime,
            client,
            model: model.into(),
            version,
            deadline,
            first_run: true,
            inputs: ports(&meta.inputs),
            outputs: ports(&meta.outputs),
            description,
        })
    }

    /// `hybrid_policy (version 1) on triton 2.52.0 at http://gpu:8001`.
    pub fn describe(&self) -> &str {
        &self.description
    }

    fn request(&self, feeds: &[Feed<'_>], wanted: &[&str]) -> ModelInferRequest {
        let mut inputs = Vec::with_capacity(feeds.len());
        let mut raw = Vec::with_capacity(feeds.len());
        for f in feeds {
            let (datatype, bytes) = match f.values {
                View::F32(v) => ("FP32", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                View::F16(v) => ("FP16", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                View::I64(v) => ("INT64", v.iter().flat_map(|x| x.to_le_bytes()).collect()),
                View::I32(v) => ("INT32", v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>()),
            };
            inputs.push(InferInputTensor { name: f.name.into(), datatype: datatype.into(), shape: f.shape.clone() });
            raw.push(bytes);
        }
        ModelInferRequest {
            model_name: self.model.clone(),
            model_version: self.version.clone(),
            id: String::new(),
            inputs,
            outputs: wanted.iter().map(|n| InferRequestedOutputTensor { name: n.to_string() }).collect(),
            raw_input_contents: raw,
        }
    }
}

impl Backend for RemoteStage {
    fn inputs(&self) -> &[Port] {
        &self.inputs
    }

    fn outputs(&self) -> &[Port] {
        &self.outputs
    }

    /// One request within the deadline. `_cancel` is ONNX Runtime's: a remote
    /// run ends by its own deadline, which the configuration keeps within the
    /// watchdog's hard timeout.
    fn run(&mut self, feeds: &[Feed<'_>], wanted: &[&str], _cancel: &RunOptions) -> Result<Vec<Tensor>, PolicyError> {
        let deadline = if self.first_run { self.deadline.max(FIRST_RUN_DEADLINE) } else { self.deadline };
        let mut request = tonic::Request::new(self.request(feeds, wanted));
        // The server drops the request once its deadline passed (grpc-timeout).
        request.set_timeout(deadline);
        let client = &mut self.client;
        let t0 = Instant::now();
        // Made inside the runtime: a timer needs its context.
        let answer = self.runtime.block_on(async { tokio::time::timeout(deadline, client.model_infer(request)).await });
        let at = &self.description;
        // The deadline ends the call from either side: our timer, tonic's
        // (a transport "Timeout expired") or the server's (DEADLINE_EXCEEDED).
        let late = |s: &tonic::Status| s.code() == tonic::Code::DeadlineExceeded || t0.elapsed() >= deadline;
        let response = match answer {
            Err(_) => return Err(missed(at, deadline)),
            Ok(Err(status)) if late(&status) => return Err(missed(at, deadline)),
            Ok(Err(status)) => return Err(classify(at, status)),
            // tokio polls the call before its timer: an answer just past the deadline is still late.
            Ok(Ok(_)) if t0.elapsed() > deadline => return Err(missed(at, deadline)),
            Ok(Ok(r)) => r.into_inner(),
        };
        if (!response.model_name.is_empty() && response.model_name != self.model)
            || (!response.model_version.is_empty() && response.model_version != self.version)
        {
            return Err(PolicyError::Remote(format!(
                "{at}: answered by model '{}' version {}",
                response.model_name, response.model_version
            )));
        }
        let outputs = wanted
            .iter()
            .map(|name| {
                let declared = self.outputs.iter().find(|p| p.name == *name).map(|p| &p.info);
                output(&response, name, declared).map_err(|e| PolicyError::Remote(format!("{at}: output '{name}' {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.first_run = false;
        Ok(outputs)
    }
}

fn missed(at: &str, deadline: Duration) -> PolicyError {
    PolicyError::Unreachable(format!("{at}: no answer within the {:.0} ms deadline", deadline.as_secs_f64() * 1e3))
}

fn endpoint(cfg: &RemoteConfig, connect_timeout: Duration) -> Result<Endpoint, PolicyError> {
    let bad = |e: &dyn std::fmt::Display| PolicyError::Load(format!("policy.*.remote.url '{}': {e}", cfg.url));
    let mut endpoint =
        Endpoint::from_shared(cfg.url.clone()).map_err(|e| bad(&e))?.connect_timeout(connect_timeout).tcp_nodelay(true);
    if cfg.url.starts_with("https://") {
        let mut tls = ClientTlsConfig::new();
        if cfg.tls_ca_file.is_empty() {
            tls = tls.with_native_roots();
        } else {
            let pem = std::fs::read(&cfg.tls_ca_file)
                .map_err(|e| PolicyError::Load(format!("policy.*.remote.tls_ca_file '{}': {e}", cfg.tls_ca_file)))?;
            tls = tls.ca_certificate(Certificate::from_pem(pem));
        }
        if !cfg.tls_domain.is_empty() {
            tls = tls.domain_name(cfg.tls_domain.clone());
        }
        endpoint = endpoint.tls_config(tls).map_err(|e| bad(&e))?;
    }
    Ok(endpoint)
}

fn version_note(version: &str) -> String {
    if version.is_empty() {
        String::new()
    } else {
        format!(" version {version}")
    }
}

/// A failed call at load: the link (or a model not served now) is retried, anything else is not.
fn unreachable_or_remote(url: &str, model: &str, status: tonic::Status, deadline: Duration) -> PolicyError {
    let at = format!("{url} (model '{model}')");
    if status.code() == tonic::Code::DeadlineExceeded {
        return PolicyError::Unreachable(format!("{at}: no answer within {:.0} s", deadline.as_secs_f64()));
    }
    classify(&at, status)
}

/// A gRPC error as the node words it: the transport's and a model the server
/// lacks are the link's (the server may come back or load it), the rest the server's.
fn classify(at: &str, status: tonic::Status) -> PolicyError {
    use tonic::Code;
    // Transport errors carry their cause in the source chain (connection
    // refused, reset, TLS), each level often repeating the one above.
    let mut parts = vec![status.message().to_string()];
    let mut source = std::error::Error::source(&status);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.last().is_some_and(|p| p == &text || text.starts_with(p.as_str())) {
            parts.push(text);
        } else {
            *parts.last_mut().expect("not empty") = text;
        }
        source = s.source();
    }
    let why = parts.into_iter().filter(|p| !p.is_empty()).collect::<Vec<_>>().join(": ");
    match status.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::NotFound | Code::Aborted => {
            PolicyError::Unreachable(format!("{at}: {why}"))
        }
        code => PolicyError::Remote(format!("{at}: {code:?}: {why}")),
    }
}

/// A KServe v2 datatype as ONNX Runtime's element type.
fn element(datatype: &str) -> Option<TensorElementType> {
    use TensorElementType as E;
    Some(match datatype {
        "FP32" => E::Float32,
        "FP16" => E::Float16,
        "BF16" => E::Bfloat16,
        "FP64" => E::Float64,
        "INT64" => E::Int64,
        "INT32" => E::Int32,
        "INT16" => E::Int16,
        "INT8" => E::Int8,
        "UINT64" => E::Uint64,
        "UINT32" => E::Uint32,
        "UINT16" => E::Uint16,
        "UINT8" => E::Uint8,
        "BOOL" => E::Bool,
        _ => return None,
    })
}

fn value_info(datatype: &str, shape: &[i64]) -> ValueInfo {
    match element(datatype) {
        Some(ty) => ValueInfo::Tensor { ty, shape: shape.to_vec() },
        None => ValueInfo::Other(format!("{datatype}{shape:?} (a KServe type the node does not feed)")),
    }
}

/// Output `name` of `response`, checked against what the model declared.
fn output(response: &ModelInferResponse, name: &str, declared: Option<&ValueInfo>) -> Result<Tensor, String> {
    let (i, t) = response
        .outputs
        .iter()
        .enumerate()
        .find(|(_, t)| t.name == name)
        .ok_or_else(|| "is missing from the answer".to_string())?;
    let ty =
        element(&t.datatype).ok_or_else(|| format!("has datatype {}, which the node does not read", t.datatype))?;
    if let Some(ValueInfo::Tensor { ty: want, shape }) = declared {
        if ty != *want {
            return Err(format!("is {}, the model declares {want:?}", t.datatype));
        }
        let fits = shape.len() == t.shape.len() && shape.iter().zip(&t.shape).all(|(w, a)| *w == -1 || w == a);
        if !fits {
            return Err(format!("has shape {:?}, the model declares {shape:?}", t.shape));
        }
    }
    if t.shape.iter().any(|d| *d < 0) {
        return Err(format!("has shape {:?}", t.shape));
    }
    let count = t
        .shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(usize::try_from(d).ok()?))
        .ok_or_else(|| format!("has shape {:?}", t.shape))?;
    let values = match response.raw_output_contents.get(i) {
        Some(raw) => from_raw(ty, raw, count)?,
        None => from_typed(ty, t.contents.as_ref(), count)?,
    };
    Ok(Tensor { shape: t.shape.clone(), values })
}

fn from_raw(ty: TensorElementType, raw: &[u8], count: usize) -> Result<Values, String> {
    use TensorElementType as E;
    let size = match ty {
        E::Float32 | E::Int32 => 4,
        E::Float16 => 2,
        E::Int64 => 8,
        other => return Err(format!("is {other:?}, which the node does not read")),
    };
    let need = count.checked_mul(size).ok_or("has a shape too large to hold")?;
    if raw.len() != need {
        return Err(format!("holds {} bytes, its shape needs {need}", raw.len()));
    }
    Ok(match ty {
        E::Float32 => Values::F32(raw.chunks_exact(4).map(|b| f32::from_le_bytes(b.try_into().unwrap())).collect()),
        E::Int32 => Values::I32(raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().unwrap())).collect()),
        E::Float16 => Values::F16(raw.chunks_exact(2).map(|b| f16::from_le_bytes(b.try_into().unwrap())).collect()),
        _ => Values::I64(raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().unwrap())).collect()),
    })
}

fn from_typed(
    ty: TensorElementType,
    contents: Option<&proto::InferTensorContents>,
    count: usize,
) -> Result<Values, String> {
    use TensorElementType as E;
    let c = contents.ok_or("has no contents")?;
    let values = match ty {
        E::Float32 => Values::F32(c.fp32_contents.clone()),
        E::Int32 => Values::I32(c.int_contents.clone()),
        E::Int64 => Values::I64(c.int64_contents.clone()),
        other => return Err(format!("is {other:?} without raw contents, which the node does not read")),
    };
    let n = match &values {
        Values::F32(v) => v.len(),
        Values::I32(v) => v.len(),
        Values::I64(v) => v.len(),
        Values::F16(v) => v.len(),
    };
    if n != count {
        return Err(format!("holds {n} values, its shape needs {count}"));
    }
    Ok(values)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proto::model_infer_response::InferOutputTensor;

    fn answer(datatype: &str, shape: Vec<i64>, raw: Vec<u8>) -> ModelInferResponse {
        ModelInferResponse {
            outputs: vec![InferOutputTensor {
                name: "actions".into(),
                datatype: datatype.into(),
                shape,
                contents: None,
            }],
            raw_output_contents: vec![raw],
            ..Default::default()
        }
    }

    fn declared() -> ValueInfo {
        ValueInfo::Tensor { ty: TensorElementType::Float16, shape: vec![-1, 1, 4, 3] }
    }

    #[test]
    fn an_answer_that_fits_its_declaration_is_read_little_endian() {
        let values: Vec<f16> = (0..12).map(|i| f16::from_f32(i as f32 * 0.5)).collect();
        let raw = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let t = output(&answer("FP16", vec![1, 1, 4, 3], raw), "actions", Some(&declared())).unwrap();
        assert_eq!(t.shape, vec![1, 1, 4, 3]);
        assert_eq!(t.values, Values::F16(values));
    }

    #[test]
    fn a_wrong_type_shape_size_or_missing_output_is_refused_with_what_it_was() {
        let raw = vec![0u8; 24];
        let e = output(&answer("FP32", vec![1, 1, 4, 3], vec![0; 48]), "actions", Some(&declared())).unwrap_err();
        assert!(e.contains("FP32") && e.contains("Float16"), "{e}");
        let e = output(&answer("FP16", vec![1, 4, 3], raw.clone()), "actions", Some(&declared())).unwrap_err();
        assert!(e.contains("[1, 4, 3]"), "{e}");
        let e = output(&answer("FP16", vec![1, 1, 4, 3], vec![0; 22]), "actions", Some(&declared())).unwrap_err();
        assert!(e.contains("22 bytes") && e.contains("24"), "{e}");
        let e = output(&answer("FP16", vec![1, 1, 4, 3], raw.clone()), "h_out", None).unwrap_err();
        assert!(e.contains("missing"), "{e}");
        let e = output(&answer("FP64", vec![1, 1, 4, 3], vec![0; 96]), "actions", None).unwrap_err();
        assert!(e.contains("Float64"), "{e}");
    }

    #[test]
    fn typed_contents_are_read_when_the_server_sends_no_raw_bytes() {
        let mut r = answer("FP32", vec![1, 3], vec![]);
        r.raw_output_contents.clear();
        r.outputs[0].contents =
            Some(proto::InferTensorContents { fp32_contents: vec![1.0, 2.0, 3.0], ..Default::default() });
        let t = output(&r, "actions", None).unwrap();
        assert_eq!(t.values, Values::F32(vec![1.0, 2.0, 3.0]));
        r.outputs[0].shape = vec![1, 4];
        assert!(output(&r, "actions", None).unwrap_err().contains("3 values"));
    }

    #[test]
    fn kserve_datatypes_become_the_element_types_the_contract_checks() {
        assert_eq!(
            value_info("FP16", &[-1, 1, 32]),
            ValueInfo::Tensor { ty: TensorElementType::Float16, shape: vec![-1, 1, 32] }
        );
        assert!(matches!(value_info("BYTES", &[1]), ValueInfo::Other(w) if w.contains("BYTES")));
        assert_eq!(served_name("hybrid", "policy", None), "hybrid_policy");
        assert_eq!(served_name("hybrid", "policy", Some("vla_large")), "vla_large");
        assert_eq!(served_name("hybrid", "hybrid", None), "hybrid", "a v1 manifest's one stage");
    }

    #[test]
    fn a_server_that_is_not_listening_is_unreachable_and_a_bad_url_is_a_load_error() {
        // A port nothing listens on: bound, then closed.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let cfg = RemoteConfig { url: format!("http://127.0.0.1:{port}"), ..Default::default() };
        let Err(e) = RemoteStage::connect(&cfg, "hybrid_policy") else { panic!("connected to nothing") };
        assert!(matches!(&e, PolicyError::Unreachable(w) if w.contains(&cfg.url)), "{e}");
        // A server that accepts connections and never answers (stopped): the load ends within its bound.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cfg = RemoteConfig { url: format!("http://{}", silent.local_addr().unwrap()), ..Default::default() };
        let t0 = Instant::now();
        let Err(e) = RemoteStage::connect_within(&cfg, "hybrid_policy", Duration::from_millis(300)) else { panic!() };
        assert!(matches!(&e, PolicyError::Unreachable(w) if w.contains("no answer")), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
        let cfg = RemoteConfig { url: "http://bad host".into(), ..Default::default() };
        assert!(matches!(RemoteStage::connect(&cfg, "m"), Err(PolicyError::Load(_))));
    }
}
