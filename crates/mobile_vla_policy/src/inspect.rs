//! What the node would feed a policy for one frame and instruction, as files.
//!
//! Owns the `mobile_vla_inputs` tool's work: the manifest's image inputs
//! through the node's own preprocessor and its text inputs through the node's
//! own tokenizers and layouts, each tensor written as a `.npy` file named
//! after the graph input, so an export can be checked against the Hugging
//! Face processors (or anything that reads NumPy files) before it drives a
//! robot. Given a sequence of frames, the image inputs are the last frame's
//! and each image window holds the sequence's last T frames, filled by the
//! node's own [`Windows`]. It runs no model and needs no ONNX Runtime (a window of a
//! stage's output needs the model: it is not written).

use std::io::Write;
use std::path::Path;

use mobile_vla_vision::{Image, JpegScaling, Preprocessor, Resampling};

use crate::backend::{Tensor, Values};
use crate::manifest::{Manifest, Source};
use crate::text::{Ints, TextEncoder};
use crate::window::{Fed, Windows};
use crate::PolicyError;

/// Writes every image, image-window and text tensor of `manifest` for
/// `frames` (in order; the last one is the current frame) and `instruction`
/// into `out` as `<graph input>.npy`; returns the names written.
pub fn write_inputs(
    manifest: &Path,
    frames: &[Image<'_>],
    jpeg_scaling: JpegScaling,
    resampling: Resampling,
    instruction: &str,
    out: &Path,
) -> Result<Vec<String>, PolicyError> {
    let loaded = Manifest::load(manifest)?;
    let m = &loaded.manifest;
    let io = |e: std::io::Error| PolicyError::Manifest(format!("{}: {e}", out.display()));
    std::fs::create_dir_all(out).map_err(io)?;
    let mut pre = Preprocessor::new(m.images.iter().map(|i| i.spec.clone()).collect(), 8192, 8192);
    pre.set_jpeg_scaling(jpeg_scaling);
    pre.set_resampling(resampling);
    // The windows filled as the node fills them: every frame before the last joins them.
    let image_of = |w: &crate::manifest::Window| m.images.iter().position(|i| i.input == w.from);
    let mut windows = Windows::new(&m.windows, m.window_start);
    let Some((last, earlier)) = frames.split_last() else {
        return Err(PolicyError::Run("no frame given".into()));
    };
    let mut entries = |frame: &Image<'_>| -> Result<Vec<Option<Tensor>>, PolicyError> {
        pre.image(frame).map_err(|e| PolicyError::Run(format!("frame refused: {e}")))?;
        Ok(m.windows
            .iter()
            .map(|w| image_of(w).map(|k| Tensor::image(&m.images[k].spec.shape(), pre.tensor(k))))
            .collect())
    };
    for frame in earlier {
        let e = entries(frame)?;
        windows.commit(e);
    }
    let current = entries(last)?;
    let tokens = m
        .texts
        .iter()
        .zip(&loaded.tokenizer_paths)
        .map(|(t, p)| TextEncoder::new(t.clone(), p)?.encode(instruction))
        .collect::<Result<Vec<_>, _>>()?;
    let mut written = Vec::new();
    for (name, source) in m.fed() {
        let path = out.join(format!("{name}.npy"));
        match source {
            Source::Image(k) => write_tensor(&path, &Tensor::image(&m.images[k].spec.shape(), pre.tensor(k))),
            Source::Window(w) => {
                // A window of a stage's output needs the model.
                let Some(entry) = &current[w] else { continue };
                match windows.feed(w, entry)? {
                    Fed::Full(window) => write_tensor(&path, &window),
                    Fed::Filling { have, need } => {
                        return Err(PolicyError::Run(format!(
                            "window '{}' waits for {need} frames; {have} given",
                            m.windows[w].input
                        )))
                    }
                }
            }
            Source::Text(k, role) => {
                let t = tokens[k].role(role);
                let values = match t {
                    Ints::I64(v) => Values::I64(v.clone()),
                    Ints::I32(v) => Values::I32(v.clone()),
                };
                write_tensor(&path, &Tensor { shape: vec![1, t.len() as i64], values })
            }
            // State starts at zero and stage outputs need a model: not inputs of the frame.
            Source::State(_) | Source::Stage(_) => continue,
        }
        .map_err(io)?;
        written.push(name.to_string());
    }
    Ok(written)
}

/// A tensor as a `.npy` file (the one place that names each element type's NumPy code).
fn write_tensor(path: &Path, t: &Tensor) -> std::io::Result<()> {
    let shape: Vec<usize> = t.shape.iter().map(|&d| d as usize).collect();
    match &t.values {
        Values::F32(v) => write_npy(path, "<f4", &shape, v.iter().flat_map(|x| x.to_le_bytes())),
        Values::F16(v) => write_npy(path, "<f2", &shape, v.iter().flat_map(|x| x.to_bits().to_le_bytes())),
        Values::I64(v) => write_npy(path, "<i8", &shape, v.iter().flat_map(|x| x.to_le_bytes())),
        Values::I32(v) => write_npy(path, "<i4", &shape, v.iter().flat_map(|x| x.to_le_bytes())),
    }
}

/// A NumPy `.npy` file (format 1.0): the header, then the little-endian data.
pub fn write_npy(path: &Path, descr: &str, shape: &[usize], data: impl Iterator<Item = u8>) -> std::io::Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 { format!("({},)", dims[0]) } else { format!("({})", dims.join(", ")) };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + '\n', a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    f.write_all(b"\x93NUMPY\x01\x00")?;
    f.write_all(&(header.len() as u16).to_le_bytes())?;
    f.write_all(header.as_bytes())?;
    for b in data {
        f.write_all(&[b])?;
    }
    f.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_headers_are_64_byte_aligned_and_name_the_shape() {
        let p = std::env::temp_dir().join(format!("mobile_vla_npy_{}.npy", std::process::id()));
        write_npy(&p, "<i4", &[1, 3], [1i32, 2, 3].iter().flat_map(|x| x.to_le_bytes())).unwrap();
        let b = std::fs::read(&p).unwrap();
        let len = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + len) % 64, 0);
        let header = std::str::from_utf8(&b[10..10 + len]).unwrap();
        assert!(header.contains("'shape': (1, 3)") && header.ends_with('\n'), "{header}");
        assert_eq!(&b[10 + len..], &[1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0]);
    }
}
