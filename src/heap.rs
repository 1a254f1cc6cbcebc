//! The process's glibc heap policy, for frames of megabytes and models of gigabytes.
//!
//! Owns the two `malloc` settings the node depends on; it never allocates.
//! Left to itself glibc serves every allocation over its (dynamic) mmap
//! threshold with a fresh mapping, so a 1080p frame (6 MB) costs ~1500 page
//! faults each time rmw deserialises one, and it keeps what a model load freed.

/// Called first in `main`: frames up to 32 MB (a 4K rgb8 frame is 25 MB) come
/// from the heap and their pages are reused frame after frame; freed memory is
/// not trimmed back on every free (see [`release_freed`] for when it is).
pub fn keep_frames_on_the_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20); // glibc's maximum on 64-bit
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
    }
}

/// Loading parses the whole model into short-lived buffers, and a cleanup
/// frees the session: hand the free pages back to the kernel then (it left an
/// 86 M-parameter model's node ~200 MB over what ONNX Runtime holds).
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; it touches
    // no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}
