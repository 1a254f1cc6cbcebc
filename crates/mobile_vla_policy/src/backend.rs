//! The seam between a policy and what runs its graphs.
//!
//! Owns the [`Backend`] trait (a graph's declared inputs and outputs, and one
//! run: named tensors in, the wanted named tensors out) and the plain tensor
//! types that cross it. The local ONNX Runtime sessions implement it today
//! (`session`); a remote inference server can implement the same trait. A
//! backend runs what it is given: which tensors feed which input, and what
//! the outputs mean, are the policy's.

use half::f16;
use ort::session::RunOptions;
use ort::value::TensorElementType;

use crate::PolicyError;

/// What a graph declares for one of its inputs or outputs.
#[derive(Debug, Clone, PartialEq)]
pub enum ValueInfo {
    /// A tensor: element type and shape (-1: a dynamic axis).
    Tensor { ty: TensorElementType, shape: Vec<i64> },
    /// Anything else (a sequence, a map), described.
    Other(String),
}

impl ValueInfo {
    pub fn element(&self) -> Option<TensorElementType> {
        match self {
            ValueInfo::Tensor { ty, .. } => Some(*ty),
            ValueInfo::Other(_) => None,
        }
    }

    pub fn dims(&self) -> &[i64] {
        match self {
            ValueInfo::Tensor { shape, .. } => shape,
            ValueInfo::Other(_) => &[],
        }
    }

    /// As error messages show it: `Float32[1, 3, 224, 224]`, `Int64 scalar`.
    pub fn describe(&self) -> String {
        match self {
            ValueInfo::Tensor { ty, shape } if shape.is_empty() => format!("{ty:?} scalar"),
            ValueInfo::Tensor { ty, shape } => format!("{ty:?}{shape:?}"),
            ValueInfo::Other(what) => what.clone(),
        }
    }
}

/// A named input or output of a graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Port {
    pub name: String,
    pub info: ValueInfo,
}

/// Tensor values, borrowed to feed a run.
#[derive(Debug, Clone, Copy)]
pub enum View<'a> {
    F32(&'a [f32]),
    F16(&'a [f16]),
    I64(&'a [i64]),
    I32(&'a [i32]),
}

/// Tensor values a run returned.
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    F32(Vec<f32>),
    F16(Vec<f16>),
    I64(Vec<i64>),
    I32(Vec<i32>),
}

impl Values {
    pub fn view(&self) -> View<'_> {
        match self {
            Values::F32(v) => View::F32(v),
            Values::F16(v) => View::F16(v),
            Values::I64(v) => View::I64(v),
            Values::I32(v) => View::I32(v),
        }
    }
}

/// An owned tensor: shape and values.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<i64>,
    pub values: Values,
}

impl Tensor {
    /// A preprocessed image of `shape`, owned (as a window keeps it).
    pub fn image(shape: &[usize], t: mobile_vla_vision::Tensor<'_>) -> Tensor {
        let shape = shape.iter().map(|&d| d as i64).collect();
        match t {
            mobile_vla_vision::Tensor::F32(v) => Tensor { shape, values: Values::F32(v.to_vec()) },
            mobile_vla_vision::Tensor::F16(v) => Tensor { shape, values: Values::F16(v.to_vec()) },
        }
    }

    /// The values as f32 (f16 widened), for a float tensor.
    pub fn floats(&self) -> Option<Vec<f32>> {
        match &self.values {
            Values::F32(v) => Some(v.clone()),
            Values::F16(v) => Some(v.iter().map(|x| x.to_f32()).collect()),
            Values::I64(_) | Values::I32(_) => None,
        }
    }
}

/// One input of a run: the graph input's name, the shape and the values.
pub struct Feed<'a> {
    pub name: &'a str,
    pub shape: Vec<i64>,
    pub values: View<'a>,
}

/// What runs one graph of a policy.
pub trait Backend: Send {
    /// The graph's inputs, in its order.
    fn inputs(&self) -> &[Port];
    /// The graph's outputs, in its order.
    fn outputs(&self) -> &[Port];
    /// Runs the graph on `feeds` and returns the outputs named in `wanted`
    /// (in that order). `cancel` lets another thread end a run that hangs
    /// (the watchdog's hard timeout); a cancelled run returns an error.
    fn run(&mut self, feeds: &[Feed<'_>], wanted: &[&str], cancel: &RunOptions) -> Result<Vec<Tensor>, PolicyError>;
}
