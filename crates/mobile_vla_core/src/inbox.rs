//! The hand-over between the async ROS side and the inference thread.
//!
//! Owns "newest frame only": a frame put while another is still waiting
//! replaces it, and the replaced one is counted as dropped, so a slow model
//! skips frames instead of queueing them. Control messages (instruction
//! changes) are kept separately, newest wins, and are never displaced by
//! frames. It does not look inside what it carries.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

struct State<F, C> {
    frame: Option<F>,
    control: Option<C>,
    dropped: u64,
    closed: bool,
}

pub struct Inbox<F, C> {
    state: Mutex<State<F, C>>,
    ready: Condvar,
}

/// What the consumer gets: a pending control message and/or the newest frame,
/// and how many frames were dropped since the last take.
#[derive(Debug, PartialEq)]
pub struct Delivery<F, C> {
    pub control: Option<C>,
    pub frame: Option<F>,
    pub dropped: u64,
}

impl<F, C> Default for Inbox<F, C> {
    fn default() -> Self {
        Self {
            state: Mutex::new(State { frame: None, control: None, dropped: 0, closed: false }),
            ready: Condvar::new(),
        }
    }
}

impl<F, C> Inbox<F, C> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<F, C>> {
        // A panic elsewhere must not stop frames: the state stays consistent per operation.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Offers a frame; returns true when it displaced one that was never taken.
    pub fn put_frame(&self, frame: F) -> bool {
        let mut s = self.lock();
        let displaced = s.frame.replace(frame).is_some();
        if displaced {
            s.dropped += 1;
        }
        self.ready.notify_one();
        displaced
    }

    pub fn put_control(&self, control: C) {
        self.lock().control = Some(control);
        self.ready.notify_one();
    }

    /// Wakes the consumer for good: `take` returns `None` from now on.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_all();
    }

    /// Waits up to `timeout` for something; `None` once closed.
    /// An empty delivery means the wait timed out.
    pub fn take(&self, timeout: Duration) -> Option<Delivery<F, C>> {
        let s = self.lock();
        let (mut s, _) = self
            .ready
            .wait_timeout_while(s, timeout, |s| !s.closed && s.frame.is_none() && s.control.is_none())
            .unwrap_or_else(|e| e.into_inner());
        if s.closed {
            return None;
        }
        let dropped = std::mem::take(&mut s.dropped);
        Some(Delivery { control: s.control.take(), frame: s.frame.take(), dropped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    const SHORT: Duration = Duration::from_millis(10);

    #[test]
    fn newer_frames_replace_waiting_ones_and_are_counted() {
        let inbox: Inbox<u32, &str> = Inbox::default();
        assert!(!inbox.put_frame(1));
        assert!(inbox.put_frame(2));
        assert!(inbox.put_frame(3));
        let d = inbox.take(SHORT).unwrap();
        assert_eq!(d, Delivery { control: None, frame: Some(3), dropped: 2 });
        // The count is "since the last take".
        inbox.put_frame(4);
        assert_eq!(inbox.take(SHORT).unwrap().dropped, 0);
    }

    #[test]
    fn control_is_never_displaced_by_frames() {
        let inbox: Inbox<u32, &str> = Inbox::default();
        inbox.put_control("go to the cup");
        for f in 0..10 {
            inbox.put_frame(f);
        }
        let d = inbox.take(SHORT).unwrap();
        assert_eq!((d.control, d.frame, d.dropped), (Some("go to the cup"), Some(9), 9));
    }

    #[test]
    fn take_times_out_empty_and_close_ends_it() {
        let inbox: Arc<Inbox<u32, ()>> = Arc::default();
        assert_eq!(inbox.take(SHORT).unwrap(), Delivery { control: None, frame: None, dropped: 0 });
        let waiter = {
            let inbox = inbox.clone();
            std::thread::spawn(move || inbox.take(Duration::from_secs(30)))
        };
        inbox.close();
        assert!(waiter.join().unwrap().is_none());
    }

    #[test]
    fn a_waiting_consumer_wakes_on_a_frame() {
        let inbox: Arc<Inbox<u32, ()>> = Arc::default();
        let waiter = {
            let inbox = inbox.clone();
            std::thread::spawn(move || inbox.take(Duration::from_secs(30)))
        };
        std::thread::sleep(SHORT);
        inbox.put_frame(7);
        assert_eq!(waiter.join().unwrap().unwrap().frame, Some(7));
    }
}
