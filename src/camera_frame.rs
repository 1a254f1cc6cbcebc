//! A camera frame as it arrived, with its pixel bytes where rmw put them.
//!
//! Owns reading `sensor_msgs/Image` and `CompressedImage` from the C messages
//! r2r's native subscriptions hand over: the header and the small fields are
//! converted, the pixel bytes are borrowed in place. r2r's typed subscription
//! would copy every frame once more into a Rust message; at 1080p that copy
//! and the fresh pages it touches cost more than the model's preprocessing.
//! It never interprets the pixels (that is the preprocessor's job) and never
//! trusts the C message's lengths beyond what rmw allocated.

use mobile_vla_vision::{Image, RawFrame};
use r2r::sensor_msgs::msg as sensor;
use r2r::std_msgs::msg::Header;
use r2r::{NativeMsg as WrappedNativeMsg, WrappedTypesupport};

/// What kind of frame, with the fields that say how to read its bytes.
pub enum Kind {
    Raw { width: u32, height: u32, step: u32, encoding: String },
    Compressed { format: String },
}

pub struct Frame {
    pub header: Header,
    pub kind: Kind,
    bytes: Bytes,
}

/// A C message owned by this value alone.
struct Native<T: WrappedTypesupport>(WrappedNativeMsg<T>);

// SAFETY: the message is not loaned (see `Frame::from_*`): it is heap memory
// that rmw filled and that only this value points to, freed by the type's
// plain destroy function, which may run on any thread. r2r itself hands these
// messages from its spin thread to the subscriber's.
unsafe impl<T: WrappedTypesupport> Send for Native<T> {}
unsafe impl<T: WrappedTypesupport> Sync for Native<T> {}

enum Bytes {
    Image(Native<sensor::Image>),
    Compressed(Native<sensor::CompressedImage>),
    /// A loaned message, copied out (the loan goes back at once).
    Owned(Vec<u8>),
}

/// A rosidl `uint8[]` sequence's elements (its `data` and `size`).
///
/// # Safety
/// `data` must point at `size` initialised bytes that outlive `'a`, or be null.
unsafe fn c_bytes<'a>(data: *const u8, size: usize) -> &'a [u8] {
    if data.is_null() || size == 0 {
        return &[];
    }
    unsafe { std::slice::from_raw_parts(data, size) }
}

/// A rosidl string (its `data` and `size`), lossily as UTF-8 (the
/// preprocessor names an unknown encoding in its error).
///
/// # Safety
/// As [`c_bytes`].
unsafe fn c_string(data: *const std::os::raw::c_char, size: usize) -> String {
    String::from_utf8_lossy(unsafe { c_bytes(data as *const u8, size) }).into_owned()
}

impl Frame {
    pub fn from_image(m: WrappedNativeMsg<sensor::Image>) -> Self {
        let c = &*m;
        let header = Header::from_native(&c.header);
        // SAFETY (here and below): rmw filled these fields; they live as long as `m`.
        let encoding = unsafe { c_string(c.encoding.data, c.encoding.size) };
        let kind = Kind::Raw { width: c.width, height: c.height, step: c.step, encoding };
        let bytes = if m.is_loaned {
            Bytes::Owned(unsafe { c_bytes(c.data.data, c.data.size) }.to_vec())
        } else {
            Bytes::Image(Native(m))
        };
        Frame { header, kind, bytes }
    }

    pub fn from_compressed(m: WrappedNativeMsg<sensor::CompressedImage>) -> Self {
        let c = &*m;
        let header = Header::from_native(&c.header);
        let kind = Kind::Compressed { format: unsafe { c_string(c.format.data, c.format.size) } };
        let bytes = if m.is_loaned {
            Bytes::Owned(unsafe { c_bytes(c.data.data, c.data.size) }.to_vec())
        } else {
            Bytes::Compressed(Native(m))
        };
        Frame { header, kind, bytes }
    }

    /// The frame as the preprocessor takes it.
    pub fn image(&self) -> Image<'_> {
        match &self.kind {
            Kind::Raw { width, height, step, encoding } => {
                Image::Raw(RawFrame { width: *width, height: *height, encoding, step: *step, data: self.data() })
            }
            Kind::Compressed { format } => Image::Compressed { format, data: self.data() },
        }
    }

    /// The pixel data (raw rows, or the compressed stream).
    pub fn data(&self) -> &[u8] {
        // SAFETY: the message is owned by `self.bytes`, so its sequence outlives the borrow.
        match &self.bytes {
            Bytes::Image(m) => unsafe { c_bytes(m.0.data.data, m.0.data.size) },
            Bytes::Compressed(m) => unsafe { c_bytes(m.0.data.data, m.0.data.size) },
            Bytes::Owned(v) => v,
        }
    }
}
