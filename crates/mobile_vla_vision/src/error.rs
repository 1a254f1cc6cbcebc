//! Why a frame was refused: one error type for every check and decoder.

use std::fmt;

/// Why a frame was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    UnsupportedEncoding(String),
    Empty { width: u32, height: u32 },
    TooLarge { width: u32, height: u32, max_width: u32, max_height: u32 },
    StepTooSmall { step: u32, min: u64 },
    DataTooShort { len: usize, need: u64 },
    OddWidthForYuv { width: u32 },
    UnsupportedFormat(String),
    Decode(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::UnsupportedEncoding(e) => write!(
                f,
                "unsupported encoding '{e}' (supported: rgb8, bgr8, rgba8, bgra8, mono8, yuv422, yuv422_yuy2)"
            ),
            FrameError::Empty { width, height } => write!(f, "empty frame {width}x{height}"),
            FrameError::TooLarge { width, height, max_width, max_height } => {
                write!(f, "frame {width}x{height} exceeds the limit {max_width}x{max_height}")
            }
            FrameError::StepTooSmall { step, min } => {
                write!(f, "step {step} is smaller than width*bytes_per_pixel = {min}")
            }
            FrameError::DataTooShort { len, need } => write!(f, "data has {len} bytes, step*height needs {need}"),
            FrameError::OddWidthForYuv { width } => write!(f, "YUV 4:2:2 frame width {width} is odd"),
            FrameError::UnsupportedFormat(s) => write!(f, "unsupported compressed format '{s}' (supported: jpeg, png)"),
            FrameError::Decode(e) => write!(f, "corrupt compressed image: {e}"),
        }
    }
}

impl std::error::Error for FrameError {}
