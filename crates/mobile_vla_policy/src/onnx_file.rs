//! An ONNX file's graph input names, read without loading the model.
//!
//! Owns a minimal protobuf walk (ModelProto.graph = 7, GraphProto.input = 11,
//! ValueInfoProto.name = 1) that skips everything else by length, so a
//! multi-gigabyte graph costs a few reads. The provider options need the
//! names before ONNX Runtime opens the graph (TensorRT's shape profiles name
//! only the inputs of that graph). It never parses weights or shapes.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

/// The graph's input names (initializers listed as inputs by old exporters included).
pub fn input_names(path: &Path) -> std::io::Result<Vec<String>> {
    let mut f = std::io::BufReader::new(std::fs::File::open(path)?);
    let len = f.get_ref().metadata()?.len();
    let mut names = Vec::new();
    // ModelProto: find field 7 (graph).
    let mut pos = 0u64;
    while pos < len {
        let (field, wire) = key(&mut f, &mut pos)?;
        if field == 7 && wire == 2 {
            let glen = varint(&mut f, &mut pos)?;
            let end = pos + glen;
            while pos < end {
                let (gf, gw) = key(&mut f, &mut pos)?;
                if gf == 11 && gw == 2 {
                    let vlen = varint(&mut f, &mut pos)?;
                    let vend = pos + vlen;
                    while pos < vend {
                        let (vf, vw) = key(&mut f, &mut pos)?;
                        if vf == 1 && vw == 2 {
                            let n = varint(&mut f, &mut pos)? as usize;
                            let mut s = vec![0; n];
                            f.read_exact(&mut s)?;
                            pos += n as u64;
                            names.push(String::from_utf8_lossy(&s).into_owned());
                        } else {
                            skip(&mut f, &mut pos, vw)?;
                        }
                    }
                } else {
                    skip(&mut f, &mut pos, gw)?;
                }
            }
            return Ok(names);
        }
        skip(&mut f, &mut pos, wire)?;
    }
    Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "no graph in the ONNX file"))
}

fn bad(what: &str) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, format!("not an ONNX protobuf: {what}"))
}

fn varint(f: &mut impl Read, pos: &mut u64) -> std::io::Result<u64> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let mut b = [0u8];
        f.read_exact(&mut b)?;
        *pos += 1;
        v |= u64::from(b[0] & 0x7f) << shift;
        if b[0] & 0x80 == 0 {
            return Ok(v);
        }
    }
    Err(bad("varint too long"))
}

fn key(f: &mut impl Read, pos: &mut u64) -> std::io::Result<(u64, u8)> {
    let k = varint(f, pos)?;
    Ok((k >> 3, (k & 7) as u8))
}

fn skip<R: Read + Seek>(f: &mut R, pos: &mut u64, wire: u8) -> std::io::Result<()> {
    let n = match wire {
        0 => {
            varint(f, pos)?;
            return Ok(());
        }
        1 => 8,
        2 => varint(f, pos)?,
        5 => 4,
        _ => return Err(bad("unknown wire type")),
    };
    f.seek(SeekFrom::Current(n as i64))?;
    *pos += n;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stand_ins_inputs_are_read_from_the_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models");
        let names = input_names(&dir.join("standin_hybrid.onnx")).unwrap();
        for want in ["pixel_values", "input_ids", "attention_mask", "image_embeds_position_mask", "h_in", "c_in"] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let hybrid = input_names(&dir.join("hf_tiny/hybrid/policy.onnx")).unwrap();
        assert!(hybrid.contains(&"position_ids".to_string()) && hybrid.contains(&"clip_text_embeds".into()));
        assert!(input_names(&dir.join("faulty_corrupt.onnx")).is_err());
    }
}
