//! CDR decoding of `mobile_vla_msgs/msg/InferenceStats` (what rosbag2 stores).
//!
//! Owns the wire layout of that one message: encapsulation header, then the
//! fields in order with CDR alignment (relative to the payload start). A short
//! or malformed payload is an error, never a panic.

use crate::Error;

/// One decoded `InferenceStats`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Stats {
    pub stamp_s: f64,
    pub frame_id: String,
    pub frame_seq: u64,
    pub command_seq: u64,
    pub policy: String,
    pub execution_provider: String,
    pub fallback_active: bool,
    pub outcome: u8,
    pub frame_age_ms: f64,
    pub preprocess_ms: f64,
    pub inference_ms: f64,
    pub postprocess_ms: f64,
    pub total_ms: f64,
    pub stamp_to_publish_ms: f64,
    pub frames_dropped: u32,
    pub action: [f64; 6],
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    little: bool,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, align: usize) -> Result<&'a [u8], Error> {
        // Alignment counts from the end of the 4-byte encapsulation header.
        let rel = self.pos - 4;
        self.pos += (align - rel % align) % align;
        let end = self.pos.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| {
            Error::Decode(format!("payload ends at byte {} (needs {})", self.buf.len(), self.pos + n))
        })?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a: [u8; N] = self.take(N, N)?.try_into().expect("length checked");
        if !self.little {
            a.reverse();
        }
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1, 1)?[0])
    }
    fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    fn i32(&mut self) -> Result<i32, Error> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    fn f64(&mut self) -> Result<f64, Error> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    fn string(&mut self) -> Result<String, Error> {
        let n = self.u32()? as usize;
        if n > self.buf.len() {
            return Err(Error::Decode(format!("string length {n} exceeds the payload")));
        }
        let bytes = self.take(n, 1)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        String::from_utf8(bytes.to_vec()).map_err(|e| Error::Decode(format!("string is not UTF-8: {e}")))
    }
}

pub fn decode(payload: &[u8]) -> Result<Stats, Error> {
    if payload.len() < 4 {
        return Err(Error::Decode("payload shorter than its CDR header".into()));
    }
    let little = match payload[1] {
        0x00 | 0x02 => false,
        0x01 | 0x03 => true,
        k => return Err(Error::Decode(format!("unknown CDR encapsulation {k:#04x}"))),
    };
    let mut r = Reader { buf: payload, pos: 4, little };
    let sec = r.i32()?;
    let nanosec = r.u32()?;
    Ok(Stats {
        stamp_s: sec as f64 + nanosec as f64 * 1e-9,
        frame_id: r.string()?,
        frame_seq: r.u64()?,
        command_seq: r.u64()?,
        policy: r.string()?,
        execution_provider: r.string()?,
        fallback_active: r.u8()? != 0,
        outcome: r.u8()?,
        frame_age_ms: r.f64()?,
        preprocess_ms: r.f64()?,
        inference_ms: r.f64()?,
        postprocess_ms: r.f64()?,
        total_ms: r.f64()?,
        stamp_to_publish_ms: r.f64()?,
        frames_dropped: r.u32()?,
        action: [r.f64()?, r.f64()?, r.f64()?, r.f64()?, r.f64()?, r.f64()?],
    })
}
