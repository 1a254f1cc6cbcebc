//! `mobile_vla_inputs`: writes the tensors the node would feed a policy for
//! one frame and instruction, one `.npy` file per graph input, through the
//! node's own preprocessing and tokenisation (no model is run). For checking
//! an export against the processors it was trained with:
//!
//!     mobile_vla_inputs MANIFEST.json FRAME.jpg|FRAME.png... --instruction TEXT --out DIR
//!     mobile_vla_inputs MANIFEST.json FRAME.raw... --raw WIDTHxHEIGHT ENCODING --instruction TEXT --out DIR
//!
//! With several frames (oldest first), the image inputs are the last one's
//! and each image window holds the last T frames, as the node fills it.
//!
//! `--jpeg-scaling reduced` decodes a JPEG as `camera.jpeg_scaling: reduced` does.
//! `--resampling simd` resizes as `camera.resampling: simd` does.
//!
//! Exit 0 on success, 2 on bad arguments, 1 when the manifest or frame is refused.

use std::path::PathBuf;
use std::process::ExitCode;

use mobile_vla_policy::inspect::write_inputs;
use mobile_vla_vision::{Image, JpegScaling, RawFrame, Resampling};

const USAGE: &str =
    "usage: mobile_vla_inputs MANIFEST FRAME... [--raw WIDTHxHEIGHT ENCODING] [--jpeg-scaling full|reduced] \
     [--resampling exact|simd] [--instruction TEXT] --out DIR";

struct Args {
    manifest: PathBuf,
    frames: Vec<PathBuf>,
    raw: Option<(u32, u32, String)>,
    jpeg_scaling: JpegScaling,
    resampling: Resampling,
    instruction: String,
    out: PathBuf,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let (mut pos, mut raw, mut instruction, mut out) = (Vec::new(), None, String::new(), None);
    let (mut jpeg_scaling, mut resampling) = (JpegScaling::Full, Resampling::Exact);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--raw" => {
                let size = it.next().ok_or(USAGE)?;
                let (w, h) = size.split_once('x').ok_or_else(|| format!("--raw {size}: expected WIDTHxHEIGHT"))?;
                let parse = |v: &str| v.parse::<u32>().map_err(|e| format!("--raw {size}: {e}"));
                raw = Some((parse(w)?, parse(h)?, it.next().ok_or(USAGE)?));
            }
            "--jpeg-scaling" => {
                jpeg_scaling = match it.next().as_deref() {
                    Some("full") => JpegScaling::Full,
                    Some("reduced") => JpegScaling::Reduced,
                    other => return Err(format!("--jpeg-scaling {}: expected full or reduced", other.unwrap_or(""))),
                }
            }
            "--resampling" => {
                resampling = match it.next().as_deref() {
                    Some("exact") => Resampling::Exact,
                    Some("simd") => Resampling::Simd,
                    other => return Err(format!("--resampling {}: expected exact or simd", other.unwrap_or(""))),
                }
            }
            "--instruction" => instruction = it.next().ok_or(USAGE)?,
            "--out" => out = Some(PathBuf::from(it.next().ok_or(USAGE)?)),
            "-h" | "--help" => return Err(USAGE.into()),
            _ if a.starts_with("--") => return Err(format!("unknown option {a}\n{USAGE}")),
            _ => pos.push(PathBuf::from(a)),
        }
    }
    if pos.len() < 2 {
        return Err(USAGE.into());
    }
    let manifest = pos.remove(0);
    Ok(Args { manifest, frames: pos, raw, jpeg_scaling, resampling, instruction, out: out.ok_or(USAGE)? })
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let mut data = Vec::new();
    for path in &args.frames {
        match std::fs::read(path) {
            Ok(d) => data.push(d),
            Err(e) => {
                eprintln!("mobile_vla_inputs: {}: {e}", path.display());
                return ExitCode::from(1);
            }
        }
    }
    let frames: Vec<Image<'_>> = args
        .frames
        .iter()
        .zip(&data)
        .map(|(path, data)| match &args.raw {
            Some((w, h, encoding)) => {
                let step = if h * w == 0 { 0 } else { (data.len() / *h as usize) as u32 };
                Image::Raw(RawFrame { width: *w, height: *h, encoding, step, data })
            }
            None => {
                let format = path.extension().and_then(|e| e.to_str()).unwrap_or("jpeg");
                Image::Compressed { format, data }
            }
        })
        .collect();
    match write_inputs(&args.manifest, &frames, args.jpeg_scaling, args.resampling, &args.instruction, &args.out) {
        Ok(names) => {
            println!("{}", names.join("\n"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mobile_vla_inputs: {e}");
            ExitCode::from(1)
        }
    }
}
