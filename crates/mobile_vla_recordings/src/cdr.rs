//! CDR, the encoding rosbag2 stores ROS messages in: a reader of fields in order.
//!
//! Owns the wire layout's rules: the 4-byte encapsulation header (and its
//! byte order), alignment relative to the payload start, strings with their
//! length and terminating NUL. A short or malformed payload is an error,
//! never a panic. Which fields a message has is the caller's.

use crate::Error;

impl<'a> Reader<'a> {
    /// A reader after the payload's encapsulation header.
    pub fn new(payload: &'a [u8]) -> Result<Self, Error> {
        if payload.len() < 4 {
            return Err(Error::Decode("payload shorter than its CDR header".into()));
        }
        let little = match payload[1] {
            0x00 | 0x02 => false,
            0x01 | 0x03 => true,
            k => return Err(Error::Decode(format!("unknown CDR encapsulation {k:#04x}"))),
        };
        Ok(Reader { buf: payload, pos: 4, little })
    }

    /// A `builtin_interfaces/Time` as seconds.
    pub fn time(&mut self) -> Result<f64, Error> {
        let sec = self.i32()?;
        let nanosec = self.u32()?;
        Ok(sec as f64 + nanosec as f64 * 1e-9)
    }
}

/// Reads the fields of one CDR payload in order, aligned as CDR aligns them.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    little: bool,
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize, align: usize) -> Result<&'a [u8], Error> {
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
    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a: [u8; N] = self.take(N, N)?.try_into().expect("length checked");
        if !self.little {
            a.reverse();
        }
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.take(1, 1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    pub fn i32(&mut self) -> Result<i32, Error> {
        Ok(i32::from_le_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, Error> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    pub fn f64(&mut self) -> Result<f64, Error> {
        Ok(f64::from_le_bytes(self.array()?))
    }
    /// A `sequence<uint8>` (`uint8[]`).
    pub fn bytes(&mut self) -> Result<&'a [u8], Error> {
        let n = self.u32()? as usize;
        if n > self.buf.len() {
            return Err(Error::Decode(format!("sequence length {n} exceeds the payload")));
        }
        self.take(n, 1)
    }
    /// A `std_msgs/Header`: its stamp (seconds) and frame id.
    pub fn header(&mut self) -> Result<(f64, String), Error> {
        Ok((self.time()?, self.string()?))
    }
    pub fn string(&mut self) -> Result<String, Error> {
        let n = self.u32()? as usize;
        if n > self.buf.len() {
            return Err(Error::Decode(format!("string length {n} exceeds the payload")));
        }
        let bytes = self.take(n, 1)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        String::from_utf8(bytes.to_vec()).map_err(|e| Error::Decode(format!("string is not UTF-8: {e}")))
    }
}
