//! The model team's episode files: HDF5, one episode each.
//!
//! Owns that layout, checked before any frame is read: `images` `(T, H, W, 3)`
//! uint8 RGB, `actions` `(T, 3)` float32 (linear.x, linear.y, angular.z),
//! `language_instruction` `(1,)` UTF-8 bytes, and, where present,
//! `action_event_types` `(T,)` bytes. A missing key, a wrong shape or type or
//! an unreadable file is an error naming the file, the key and what was
//! expected. Frames are read one at a time, so an episode never sits in
//! memory whole. The files carry no clock: frame `k` arrives at `k / rate_hz`.

use std::path::Path;

use hdf5::types::{FixedAscii, FixedUnicode, TypeDescriptor, VarLenAscii, VarLenUnicode};

use crate::episode::{Event, Frame, Picture};
use crate::Error;

/// Longest instruction or label read from a fixed-length string.
const MAX_TEXT: usize = 4096;

/// Calls `visit` with the episode's instruction, then each frame in order, at `rate_hz`.
pub fn read(path: &Path, rate_hz: f64, mut visit: impl FnMut(Event) -> Result<(), Error>) -> Result<(), Error> {
    let name = path.display().to_string();
    let bad = |key: &str, what: String| Error::Input(format!("{name}: {key}: {what}"));
    let file = hdf5::File::open(path).map_err(|e| Error::Input(format!("{name}: not a readable HDF5 file: {e}")))?;
    let dataset = |key: &str| {
        file.dataset(key).map_err(|_| {
            let keys = file.member_names().unwrap_or_default().join(", ");
            bad(key, format!("missing (the file has: {keys}); expected the team's episode layout"))
        })
    };
    let images = dataset("images")?;
    let actions = dataset("actions")?;
    let instruction = dataset("language_instruction")?;
    let labels = file.dataset("action_event_types").ok();

    let shape = images.shape();
    let kind = |d: &hdf5::Dataset| d.dtype().and_then(|t| t.to_descriptor()).ok();
    if shape.len() != 4 || shape[3] != 3 || kind(&images) != Some(TypeDescriptor::Unsigned(hdf5::types::IntSize::U1)) {
        return Err(bad("images", format!("{shape:?} {:?}, expected (T, height, width, 3) uint8 RGB", kind(&images))));
    }
    let (t, height, width) = (shape[0], shape[1], shape[2]);
    let float32 = Some(TypeDescriptor::Float(hdf5::types::FloatSize::U4));
    if actions.shape() != [t, 3] || kind(&actions) != float32 {
        return Err(bad(
            "actions",
            format!("{:?} {:?}, expected ({t}, 3) float32 (one action per image)", actions.shape(), kind(&actions)),
        ));
    }
    let recorded: Vec<f32> = actions.read_raw().map_err(|e| bad("actions", e.to_string()))?;
    let texts = |d: &hdf5::Dataset, key: &str| strings(d).map_err(|e| bad(key, e));
    let text = match texts(&instruction, "language_instruction")?.as_slice() {
        [one] => one.clone(),
        other => {
            return Err(bad("language_instruction", format!("{} strings, expected (1,) UTF-8 bytes", other.len())))
        }
    };
    let labels = match &labels {
        Some(d) => {
            let l = texts(d, "action_event_types")?;
            if l.len() != t {
                return Err(bad("action_event_types", format!("{} labels, expected ({t},)", l.len())));
            }
            l.into_iter().map(Some).collect()
        }
        None => vec![None; t],
    };

    visit(Event::Instruction { time_s: 0.0, text })?;
    for (k, label) in labels.into_iter().enumerate() {
        let image = images
            .read_slice::<u8, _, ndarray::Ix4>(ndarray::s![k..k + 1, .., .., ..])
            .map_err(|e| bad("images", format!("frame {k} unreadable (truncated?): {e}")))?;
        let (data, _) = image.into_raw_vec_and_offset();
        let time_s = k as f64 / rate_hz;
        let a = &recorded[3 * k..3 * k + 3];
        visit(Event::Frame(Frame {
            time_s,
            stamp_s: Some(time_s),
            picture: Picture::Raw {
                width: width as u32,
                height: height as u32,
                step: 3 * width as u32,
                encoding: "rgb8".into(),
            },
            data,
            action: [a[0] as f64, a[1] as f64, a[2] as f64],
            label,
        }))?;
    }
    Ok(())
}

/// A 1-D dataset of strings (fixed or variable length, bytes or UTF-8), each decoded as UTF-8.
fn strings(d: &hdf5::Dataset) -> Result<Vec<String>, String> {
    let descriptor = d.dtype().and_then(|t| t.to_descriptor()).map_err(|e| e.to_string())?;
    if d.ndim() != 1 {
        return Err(format!("shape {:?}, expected a 1-D array of strings", d.shape()));
    }
    let utf8 = |b: &[u8]| String::from_utf8(b.to_vec()).map_err(|e| format!("not UTF-8: {e}"));
    let read_err = |e: hdf5::Error| e.to_string();
    match descriptor {
        TypeDescriptor::FixedAscii(n) if n <= MAX_TEXT => {
            d.read_raw::<FixedAscii<MAX_TEXT>>().map_err(read_err)?.iter().map(|s| utf8(s.as_bytes())).collect()
        }
        TypeDescriptor::FixedUnicode(n) if n <= MAX_TEXT => {
            d.read_raw::<FixedUnicode<MAX_TEXT>>().map_err(read_err)?.iter().map(|s| utf8(s.as_bytes())).collect()
        }
        TypeDescriptor::VarLenAscii => {
            d.read_raw::<VarLenAscii>().map_err(read_err)?.iter().map(|s| utf8(s.as_bytes())).collect()
        }
        TypeDescriptor::VarLenUnicode => {
            d.read_raw::<VarLenUnicode>().map_err(read_err)?.iter().map(|s| utf8(s.as_bytes())).collect()
        }
        other => Err(format!("{other:?}, expected UTF-8 bytes (a string of at most {MAX_TEXT} bytes)")),
    }
}
