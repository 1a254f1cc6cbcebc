//! A manifest against the real graphs: every input fed, every type and shape agreeing, before any frame.
//!
//! Owns matching each graph input of each stage to what feeds it (an image,
//! a text role, the recurrent state, a window of frames, or an earlier
//! stage's output), checking each feed kind's type and shape, what each window
//! holds per frame (made before the first stage that takes a window, so all
//! windows fill in step), which outputs later stages read, and where the
//! action and each state output come from. A mismatch is one error
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

/// What a window adds each frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum WindowSource {
    /// Image input `k`'s tensor.
    Image(usize),
    /// An output of an earlier per-frame stage.
    Stage { stage: usize, output: String },
}

/// A window as wired: what it adds each frame, of which type and shape (batch axis of 1 first).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct WindowFeed {
    pub source: WindowSource,
    pub element: TensorElementType,
    /// What one frame adds (`-1`: a dynamic axis).
    pub frame_dims: Vec<i64>,
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
    /// Per window, what it adds each frame.
    pub windows: Vec<WindowFeed>,
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
    let mut windows = vec![None; m.windows.len()];
    for (si, stage) in stages.iter().enumerate() {
        feeds.push(wire_stage(m, stage, &fed, &mut used, &produced, &mut windows)?);
        for out in stage.outputs {
            produced.insert(out.name.clone(), (si, out.info.clone(), stage.run));
        }
    }
    // An image only a window takes is fed through it.
    for (k, (name, source)) in fed.iter().enumerate() {
        if matches!(source, Source::Image(_)) && m.windows.iter().any(|w| w.from == *name) {
            used[k] = true;
        }
    }
    if let Some(k) = used.iter().position(|u| !u) {
        let all: Vec<&str> = stages.iter().flat_map(|s| s.inputs.iter().map(|i| i.name.as_str())).collect();
        return Err(contract(format!("input '{}' is not in any stage's graph (they take {all:?})", fed[k].0)));
    }
    // Outputs later stages read, kept by the stage that makes them.
    let mut keep = vec![Vec::new(); stages.len()];
    let window_outputs = windows.iter().flatten().filter_map(|w| match &w.source {
        WindowSource::Stage { output, .. } => Some(output),
        WindowSource::Image(_) => None,
    });
    let stage_inputs = feeds.iter().flatten().filter_map(|(_, f)| if let Input::Stage(n) = f { Some(n) } else { None });
    for n in stage_inputs.chain(window_outputs) {
        let si = produced[n].0;
        if !keep[si].contains(n) {
            keep[si].push(n.clone());
        }
    }
    let windows: Vec<WindowFeed> =
        windows.into_iter().map(|w| w.expect("every window's input is in a graph (checked above)")).collect();
    in_step(m, &feeds, &windows)?;
    let action_stage = wire_action(m, &produced)?;
    let mut state_stage = Vec::new();
    for s in &m.state {
        let (si, ty) = per_frame_output(m, &produced, &s.output, "state output")?;
        let want: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
        expect_tensor(&ty, float_element(s.dtype), Some(&want))
            .map_err(|e| contract(format!("state output '{}': {e}", s.output)))?;
        state_stage.push(si);
    }
    Ok(Wiring { feeds, keep, action_stage, state_stage, windows })
}

/// What feeds each input of one stage.
fn wire_stage(
    m: &Manifest,
    stage: &Graph<'_>,
    fed: &[(&str, Source)],
    used: &mut [bool],
    produced: &Produced,
    windows: &mut [Option<WindowFeed>],
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
            if let Source::Window(k) = source {
                let window = window_feed(m, k, produced).map_err(|e| contract(here(&e)))?;
                expect_window(m, k, &window, actual).map_err(|e| contract(here(&e)))?;
                windows[k] = Some(window);
            } else {
                expect_fed(m, source, actual).map_err(|e| contract(here(&e)))?;
            }
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
    let need = a.width() as i64;
    let (_, width) = pick(&shape, a.index.as_deref()).map_err(|e| contract(format!("tensor '{}' {e}", a.output)))?;
    let declared_width = *ty.dims().last().unwrap_or(&-1);
    if declared_width != -1 && (width as i64) < need {
        return Err(contract(format!(
            "tensor '{}': the action vector has {width} elements, the manifest's axes need {need} (graph has {})",
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

/// What window `k` adds each frame: an image input, or an output a per-frame stage gave before this one.
fn window_feed(m: &Manifest, k: usize, produced: &Produced) -> Result<WindowFeed, String> {
    let from = &m.windows[k].from;
    let (source, element, frame_dims) = if let Some(i) = m.images.iter().position(|img| img.input == *from) {
        let spec = &m.images[i].spec;
        (WindowSource::Image(i), image_element(spec.dtype), spec.shape().iter().map(|&d| d as i64).collect())
    } else {
        match produced.get(from) {
            Some((stage, info, StageRun::PerFrame)) => {
                let element =
                    info.element().ok_or_else(|| format!("is a window of '{from}', which is not a tensor"))?;
                (WindowSource::Stage { stage: *stage, output: from.clone() }, element, info.dims().to_vec())
            }
            Some((stage, _, StageRun::PerInstruction)) => {
                return Err(format!(
                    "is a window of '{from}', an output of stage '{}', which runs per_instruction: a window holds \
                     per-frame tensors",
                    m.stages[*stage].name
                ))
            }
            None => {
                return Err(format!(
                    "is a window of '{from}', which is neither an image input nor an output of an earlier per_frame \
                     stage"
                ))
            }
        }
    };
    if !matches!(frame_dims.first(), Some(1 | -1)) {
        return Err(format!("is a window of '{from}' {frame_dims:?}: what a frame adds must have a batch axis of 1"));
    }
    Ok(WindowFeed { source, element, frame_dims })
}

/// The graph input of window `k` must be `[1, T, ...]` of what a frame adds.
fn expect_window(m: &Manifest, k: usize, window: &WindowFeed, actual: &ValueInfo) -> Result<(), String> {
    let length = m.windows[k].length as i64;
    let want: Vec<i64> = [1, length].into_iter().chain(window.frame_dims[1..].iter().copied()).collect();
    expect_tensor(actual, window.element, Some(&want))
        .map_err(|e| format!("(windows[{k}]: length {length} of '{}') {e}", m.windows[k].from))
}

/// Every window's frame is made before the first stage that takes a window:
/// a run that stops there while a window fills has added this frame to all of them.
fn in_step(m: &Manifest, feeds: &[Vec<(String, Input)>], windows: &[WindowFeed]) -> Result<(), PolicyError> {
    let takes_window = |f: &[(String, Input)]| f.iter().any(|(_, i)| matches!(i, Input::Manifest(Source::Window(_))));
    let Some(first) = feeds.iter().position(|f| takes_window(f)) else { return Ok(()) };
    for (k, w) in windows.iter().enumerate() {
        if let WindowSource::Stage { stage, output } = &w.source {
            if *stage >= first {
                return Err(contract(format!(
                    "windows[{k}] ('{}') is of '{output}', an output of stage '{}', which runs after stage '{}' \
                     takes a window: every window's frame must be made before the first stage that takes one",
                    m.windows[k].input, m.stages[*stage].name, m.stages[first].name
                )));
            }
        }
    }
    Ok(())
}

pub(crate) fn image_element(d: DType) -> TensorElementType {
    match d {
        DType::F32 => TensorElementType::Float32,
        DType::F16 => TensorElementType::Float16,
    }
}

/// The type and shape a manifest role feeds must match the graph's input.
fn expect_fed(m: &Manifest, source: Source, actual: &ValueInfo) -> Result<(), String> {
    match source {
        Source::Image(k) => {
            let spec = &m.images[k].spec;
            let shape: Vec<i64> = spec.shape().iter().map(|&d| d as i64).collect();
            expect_tensor(actual, image_element(spec.dtype), Some(&shape))
        }
        Source::State(k) => {
            let s = &m.state[k];
            let shape: Vec<i64> = s.shape.iter().map(|&d| d as i64).collect();
            expect_tensor(actual, float_element(s.dtype), Some(&shape))
        }
        Source::Text(k, role) => expect_text(m, k, role, actual),
        // Windows are checked by expect_window; an earlier stage's outputs where they are read.
        Source::Window(_) | Source::Stage(_) => Ok(()),
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

    fn port(name: &str, shape: &[i64]) -> Port {
        Port { name: name.into(), info: tensor(TensorElementType::Float32, shape) }
    }

    #[test]
    fn windows_fill_in_step_or_the_manifest_is_refused() {
        // a: image -> fa; b: window of fa -> fb; c: window of fb -> action. A run
        // waiting at b would never make fb: c's window would fill behind a's.
        let m = Manifest::parse(
            r#"{"version": 2, "name": "t", "stages": [{"name": "a", "onnx": "a.onnx"}, {"name": "b", "onnx": "b.onnx"},
                {"name": "c", "onnx": "c.onnx"}],
                "images": [{"input": "img", "width": 4, "height": 4, "resize": "stretch", "filter": "bilinear",
                  "channel_order": "rgb", "layout": "nchw", "scale": 1, "mean": [0, 0, 0], "std": [1, 1, 1],
                  "dtype": "f32"}],
                "action": {"output": "act", "axes": {"linear_x": {"index": 0, "clip": 1}}},
                "windows": [{"input": "wa", "from": "fa", "length": 2}, {"input": "wb", "from": "fb", "length": 2}]}"#,
        )
        .unwrap();
        let (a_in, a_out) = ([port("img", &[1, 3, 4, 4])], [port("fa", &[1, 8])]);
        let (b_in, b_out) = ([port("wa", &[1, 2, 8])], [port("fb", &[1, 8])]);
        let (c_in, c_out) = ([port("wb", &[1, 2, 8])], [port("act", &[1, 1])]);
        let graph = |name, inputs, outputs| Graph { name, run: StageRun::PerFrame, inputs, outputs };
        let stages = [graph("a", &a_in[..], &a_out[..]), graph("b", &b_in, &b_out), graph("c", &c_in, &c_out)];
        let e = wire(&m, &stages).unwrap_err().to_string();
        assert!(e.contains("windows[1] ('wb') is of 'fb', an output of stage 'b'") && e.contains("stage 'b'"), "{e}");
        // Both windows taken by the last stage: in step.
        let c_in = [port("wa", &[1, 2, 8]), port("wb", &[1, 2, 8])];
        let b_in = [port("fa", &[1, 8])];
        let stages = [graph("a", &a_in[..], &a_out[..]), graph("b", &b_in, &b_out), graph("c", &c_in, &c_out)];
        let w = wire(&m, &stages).unwrap();
        assert_eq!(w.windows[1].frame_dims, vec![1, 8]);
    }
}
