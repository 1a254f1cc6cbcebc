//! A manifest against the real graphs: every input fed, every type and shape agreeing, before any frame.
//!
//! Owns matching each graph input of each stage to what feeds it (an image,
//! a text role, the recurrent state, or an earlier stage's output), checking
//! each feed kind's type and shape, which outputs later stages read, and
//! where the action and each state output come from. A mismatch is one error
//! naming the stage, the tensor, what the manifest expects and what the graph
//! has. It reads the graphs' declared ports only ([`Port`]), so a local and a
//! remote backend are checked alike; it runs nothing.

use std::collections::HashMap;

use ort::value::TensorElementType;

use crate::action::pick;
use crate::backend::{Port, ValueInfo};
use crate::manifest::{FloatType, IdType, Manifest, Padding, Source, StageRun, TextLayout, TextRole};
use crate::PolicyError;
use mobile_vla_vision::DType;

/// One stage's graph as its backend declares it.
pub(crate) struct Graph<'a> {
    pub name: &'a str,
    pub run: StageRun,
    pub inputs: &'a [Port],
    pub outputs: &'a [Port],
}

/// What feeds one graph input.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Input {
    Manifest(Source),
    /// An output of an earlier stage, by name.
    Stage(String),
}

/// How a policy's stages are wired together.
#[derive(Debug)]
pub(crate) struct Wiring {
    /// Per stage: each graph input and what feeds it.
    pub feeds: Vec<Vec<(String, Input)>>,
    /// Per stage: its outputs that a later stage reads.
    pub keep: Vec<Vec<String>>,
    /// The stage that makes the action.
    pub action_stage: usize,
    /// Per state pair, the stage that produces its output.
    pub state_stage: Vec<usize>,
}

/// Outputs seen so far: name -> (stage, declared type, when that stage runs).
type Produced = HashMap<String, (usize, ValueInfo, StageRun)>;

fn contract(s: String) -> PolicyError {
    PolicyError::Contract(s)
}

/// Matches every graph input to what feeds it and checks types and shapes;
/// finds the stage of the action and of each state output.
pub(crate) fn wire(m: &Manifest, stages: &[Graph<'_>]) -> Result<Wiring, PolicyError> {
    let fed = m.fed();
    let mut used = vec![false; fed.len()];
    let mut produced = Produced::new();
    let mut feeds = Vec::new();
    for (si, stage) in stages.iter().enumerate() {
        feeds.push(wire_stage(m, stage, &fed, &mut used, &produced)?);
        for out in stage.outputs {
            produced.insert(out.name.clone(), (si, out.info.clone(), stage.run));
        }
    }
    if let Some(k) = used.iter().position(|u| !u) {
        let all: Vec<&str> = stages.iter().flat_map(|s| s.inputs.iter().map(|i| i.name.as_str())).collect();
        return Err(contract(format!("input '{}' is not in any stage's graph (they take {all:?})", fed[k].0)));
    }
    // Outputs later stages read, kept by the stage that makes them.
    let mut keep = vec![Vec::new(); stages.len()];
    for input in feeds.iter().flatten() {
        if let (_, Input::Stage(n)) = input {
            let si = produced[n].0;
            if !keep[si].contains(n) {
                keep[si].push(n.clone());
            }
        }
    }
    let action_stage = wire_action(m, &produced)?;
    let mut state_stage = Vec::new();
    for s in &m.state {
        let (si, ty) = per_frame_output(m, &produced, &s.output, "state output")?;
        let want: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
        expect_tensor(&ty, float_element(s.dtype), Some(&want))
            .map_err(|e| contract(format!("state output '{}': {e}", s.output)))?;
        state_stage.push(si);
    }
    Ok(Wiring { feeds, keep, action_stage, state_stage })
}

/// What feeds each input of one stage.
fn wire_stage(
    m: &Manifest,
    stage: &Graph<'_>,
    fed: &[(&str, Source)],
    used: &mut [bool],
    produced: &Produced,
) -> Result<Vec<(String, Input)>, PolicyError> {
    let mut feeds = Vec::new();
    for input in stage.inputs {
        let (name, actual) = (input.name.as_str(), &input.info);
        let here = |what: &str| format!("stage '{}': tensor '{name}' {what}", stage.name);
        let feed = if let Some(k) = fed.iter().position(|(n, _)| *n == name) {
            used[k] = true;
            let source = fed[k].1;
            if stage.run == StageRun::PerInstruction && !matches!(source, Source::Text(..)) {
                return Err(contract(here(
                    "changes every frame, but the stage runs per_instruction (it may read text and \
                     other per-instruction stages only)",
                )));
            }
            expect_fed(m, source, actual).map_err(|e| contract(here(&e)))?;
            Input::Manifest(source)
        } else if let Some((from, ty, run)) = produced.get(name) {
            if stage.run == StageRun::PerInstruction && *run == StageRun::PerFrame {
                return Err(contract(here("comes from a per_frame stage, but this stage runs per_instruction")));
            }
            if ty.element() != actual.element() {
                return Err(contract(here(&format!(
                    "expected {} (output of stage '{}'), graph has {}",
                    ty.describe(),
                    m.stages[*from].name,
                    actual.describe()
                ))));
            }
            Input::Stage(name.to_string())
        } else {
            let mut have: Vec<&str> = fed.iter().map(|(n, _)| *n).collect();
            have.extend(produced.keys().map(String::as_str));
            have.sort();
            return Err(contract(format!(
                "graph input '{name}' ({}) of stage '{}' is not named in the manifest (it feeds {have:?}) \
                 nor an output of an earlier stage",
                actual.describe(),
                stage.name
            )));
        };
        feeds.push((name.to_string(), feed));
    }
    Ok(feeds)
}

/// The stage and type of an output the node reads every frame.
fn per_frame_output(
    m: &Manifest,
    produced: &Produced,
    name: &str,
    what: &str,
) -> Result<(usize, ValueInfo), PolicyError> {
    match produced.get(name) {
        Some((si, ty, StageRun::PerFrame)) => Ok((*si, ty.clone())),
        Some((si, _, _)) => Err(contract(format!(
            "{what} '{name}' is an output of stage '{}', which runs per_instruction",
            m.stages[*si].name
        ))),
        None => {
            let mut have: Vec<&str> = produced.keys().map(String::as_str).collect();
            have.sort();
            Err(contract(format!("{what} '{name}' is not an output of any stage (they give {have:?})")))
        }
    }
}

/// The stage of the action output: a float tensor whose index path leaves a vector wide enough for the velocities.
fn wire_action(m: &Manifest, produced: &Produced) -> Result<usize, PolicyError> {
    let a = &m.action;
    let (stage, ty) = per_frame_output(m, produced, &a.output, "output")?;
    match ty.element() {
        Some(TensorElementType::Float32 | TensorElementType::Float16) => {}
        _ => {
            return Err(contract(format!(
                "tensor '{}': expected a Float32 or Float16 tensor, graph has {}",
                a.output,
                ty.describe()
            )))
        }
    }
    // Check the index path and width against the static shape (dynamic axes are checked per run).
    let shape: Vec<i64> = ty.dims().iter().map(|&d| if d < 0 { 1 } else { d }).collect();
    let need = a.linear_x.max(a.linear_y).max(a.angular_z) as i64 + 1;
    let (_, width) = pick(&shape, a.index.as_deref()).map_err(|e| contract(format!("tensor '{}' {e}", a.output)))?;
    let declared_width = *ty.dims().last().unwrap_or(&-1);
    if declared_width != -1 && (width as i64) < need {
        return Err(contract(format!(
            "tensor '{}': the action vector has {width} elements, linear_x/linear_y/angular_z need {need} (graph has {})",
            a.output,
            ty.describe()
        )));
    }
    Ok(stage)
}

pub(crate) fn float_element(t: FloatType) -> TensorElementType {
    match t {
        FloatType::F32 => TensorElementType::Float32,
        FloatType::F16 => TensorElementType::Float16,
    }
}

/// The type and shape a manifest role feeds must match the graph's input.
fn expect_fed(m: &Manifest, source: Source, actual: &ValueInfo) -> Result<(), String> {
    match source {
        Source::Image(k) => {
            let spec = &m.images[k].spec;
            let ty = match spec.dtype {
                DType::F32 => TensorElementType::Float32,
                DType::F16 => TensorElementType::Float16,
            };
            let shape: Vec<i64> = spec.shape().iter().map(|&d| d as i64).collect();
            expect_tensor(actual, ty, Some(&shape))
        }
        Source::State(k) => {
            let s = &m.state[k];
            let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
            expect_tensor(actual, float_element(s.dtype), Some(&shape))
        }
        Source::Text(k, role) => expect_text(m, k, role, actual),
        Source::Stage(_) => Ok(()),
    }
}

fn expect_text(m: &Manifest, k: usize, role: TextRole, actual: &ValueInfo) -> Result<(), String> {
    let t = &m.texts[k];
    let ty = match t.dtype {
        IdType::Int64 => TensorElementType::Int64,
        IdType::Int32 => TensorElementType::Int32,
    };
    let len = match t.padding {
        Padding::MaxLength => t.max_length as i64,
        Padding::Exact => -1,
    };
    expect_tensor(actual, ty, Some(&[1, len]))?;
    let d = actual.dims();
    if t.padding == Padding::Exact && d[1] != -1 {
        return Err(format!(
            "has a fixed length {} but padding is exact (the length follows the instruction): export it \
             with a dynamic axis, or use padding max_length with max_length {}",
            d[1], d[1]
        ));
    }
    if role == TextRole::ImageEmbedsPositionMask && t.layout == TextLayout::Plain {
        return Err("is an image-token mask, but the text layout is plain".into());
    }
    Ok(())
}

fn expect_tensor(actual: &ValueInfo, ty: TensorElementType, shape: Option<&[i64]>) -> Result<(), String> {
    let ok = match actual {
        ValueInfo::Tensor { ty: t, shape: s } => {
            *t == ty
                && shape.is_none_or(|want| {
                    s.len() == want.len() && s.iter().zip(want).all(|(a, w)| *a == -1 || *w == -1 || a == w)
                })
        }
        ValueInfo::Other(_) => false,
    };
    if ok {
        return Ok(());
    }
    let want = match shape {
        None => format!("a {ty:?} tensor"),
        Some([]) => format!("a {ty:?} scalar"),
        Some(s) => format!("{ty:?}{s:?}"),
    };
    Err(format!("expected {want}, graph has {}", actual.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(ty: TensorElementType, shape: &[i64]) -> ValueInfo {
        ValueInfo::Tensor { ty, shape: shape.to_vec() }
    }

    #[test]
    fn type_errors_say_scalar_only_for_scalars() {
        let e =
            expect_tensor(&tensor(TensorElementType::Int64, &[1, 3]), TensorElementType::Float32, None).unwrap_err();
        assert_eq!(e, "expected a Float32 tensor, graph has Int64[1, 3]");
        let f16 = tensor(TensorElementType::Float16, &[1, 1, 128]);
        let e = expect_tensor(&f16, TensorElementType::Float32, Some(&[1, 1, 128])).unwrap_err();
        assert_eq!(e, "expected Float32[1, 1, 128], graph has Float16[1, 1, 128]");
        let e = expect_tensor(&tensor(TensorElementType::Float32, &[]), TensorElementType::Float32, Some(&[1, 3]))
            .unwrap_err();
        assert_eq!(e, "expected Float32[1, 3], graph has Float32 scalar");
    }
}
