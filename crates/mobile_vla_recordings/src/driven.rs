//! An episode out of a rosbag2 recording: the camera, the instruction and the command that drove.
//!
//! Owns which topics are read (chosen by the caller, [`Topics`]), decoding
//! their messages (`sensor_msgs/Image` or `CompressedImage`, `std_msgs/String`,
//! `geometry_msgs/Twist` or `TwistStamped`), and what "the action after a
//! frame" means in a bag: the last command logged before the next frame
//! arrived (for the last frame, before one more frame interval passed: a
//! dead-man's zero after the camera stopped is not its action), or zero when
//! that command was older than `action_timeout_s`, as twist_mux would have
//! stopped the robot. A topic of the wrong type is an error naming it; a
//! message that does not decode fails the recording, never a crash. A bag
//! without its camera, instruction or action topic is refused before any of
//! it is replayed.

use std::path::Path;

use crate::bag::{self, Message};
use crate::cdr::Reader;
use crate::episode::{Event, Frame, Picture};
use crate::Error;

/// The topics an episode is read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Topics {
    /// `sensor_msgs/Image` or `sensor_msgs/CompressedImage`.
    pub camera: String,
    /// `std_msgs/String`.
    pub instruction: String,
    /// `geometry_msgs/Twist` or `TwistStamped`: what really drove.
    pub action: String,
    /// A command older than this no longer drives (seconds).
    pub action_timeout_s: f64,
}

impl Default for Topics {
    fn default() -> Self {
        Topics {
            camera: "/camera/image_raw".into(),
            instruction: "/instruction".into(),
            action: "/cmd_vel".into(),
            action_timeout_s: 0.5,
        }
    }
}

/// Calls `visit` with the recording's instructions and frames in log order, each frame with its action.
///
/// The topics are checked first, against the recording's own list: with no
/// `topics.camera` but its `/compressed` sibling (image_transport's name),
/// that one is read; a missing camera, instruction or action topic is an
/// error naming it and the topics there are.
pub fn read(path: &Path, topics: &Topics, mut visit: impl FnMut(Event) -> Result<(), Error>) -> Result<(), Error> {
    let recorded = bag::topics(path)?;
    let has = |t: &str| recorded.iter().any(|(name, _)| name == t);
    let missing = |what: &str, topic: &str, flag: &str| {
        let list: Vec<String> = recorded.iter().map(|(n, t)| format!("{n} ({t})")).collect();
        let list = if list.is_empty() { "none".to_string() } else { list.join(", ") };
        Error::Input(format!(
            "{}: no {what} topic {topic} (topics in the bag: {list}); choose it with {flag}",
            path.display()
        ))
    };
    let compressed = format!("{}/compressed", topics.camera);
    let camera = match (has(&topics.camera), has(&compressed)) {
        (true, _) => topics.camera.clone(),
        (false, true) => compressed,
        (false, false) => return Err(missing("camera", &topics.camera, "--camera")),
    };
    if !has(&topics.instruction) {
        return Err(missing("instruction", &topics.instruction, "--instruction-topic"));
    }
    if !has(&topics.action) {
        return Err(missing("action", &topics.action, "--action-topic"));
    }
    let topics = Topics { camera, ..topics.clone() };
    let mut reader = Episode::new(&topics);
    bag::read(path, |m| reader.message(m, &mut visit))?;
    if reader.frames == 0 {
        return Err(Error::Input(format!("{}: no frames on {}", path.display(), topics.camera)));
    }
    reader.finish(&mut visit)
}

/// A recorded command: when, and what.
type Command = (f64, [f64; 3]);

struct Episode<'t> {
    topics: &'t Topics,
    /// The latest frame, waiting for the command that follows it.
    pending: Option<Frame>,
    /// Events logged after the pending frame.
    after: Vec<Event>,
    /// The latest command logged before the pending frame.
    before: Option<Command>,
    /// The commands logged since the pending frame arrived.
    since: Vec<Command>,
    /// Between the last two frames (s).
    period_s: Option<f64>,
    frames: usize,
}

impl<'t> Episode<'t> {
    fn new(topics: &'t Topics) -> Self {
        Episode { topics, pending: None, after: Vec::new(), before: None, since: Vec::new(), period_s: None, frames: 0 }
    }

    fn message(&mut self, m: &Message<'_>, visit: &mut impl FnMut(Event) -> Result<(), Error>) -> Result<(), Error> {
        let time_s = m.log_time_ns as f64 * 1e-9;
        let ty = m.schema.map(|s| s.name).unwrap_or("");
        let what = |e: Error| Error::Decode(format!("{}: message {} on {}: {}", m.file, m.index, m.topic, e.detail()));
        if m.topic == self.topics.camera {
            expect(m, &["sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage"])?;
            let mut frame = decode_frame(ty, m.data).map_err(what)?;
            frame.time_s = time_s;
            self.frames += 1;
            if let Some(p) = &self.pending {
                self.period_s = Some(time_s - p.time_s);
            }
            self.settle(time_s, visit)?;
            self.pending = Some(frame);
        } else if m.topic == self.topics.instruction {
            expect(m, &["std_msgs/msg/String"])?;
            let text = Reader::new(m.data).and_then(|mut r| r.string()).map_err(what)?;
            self.then(Event::Instruction { time_s, text }, visit)?;
        } else if m.topic == self.topics.action {
            expect(m, &["geometry_msgs/msg/Twist", "geometry_msgs/msg/TwistStamped"])?;
            let v = decode_twist(ty == "geometry_msgs/msg/TwistStamped", m.data).map_err(what)?;
            if self.pending.is_some() {
                self.since.push((time_s, v));
            } else {
                self.before = Some((time_s, v));
            }
        }
        Ok(())
    }

    /// `event` in its place: after the pending frame, if there is one.
    fn then(&mut self, event: Event, visit: &mut impl FnMut(Event) -> Result<(), Error>) -> Result<(), Error> {
        if self.pending.is_some() {
            self.after.push(event);
            Ok(())
        } else {
            visit(event)
        }
    }

    /// The pending frame gets the command in force at `time_s`, and goes out with what followed it.
    fn settle(&mut self, time_s: f64, visit: &mut impl FnMut(Event) -> Result<(), Error>) -> Result<(), Error> {
        let in_force = self.since.iter().rev().find(|(t, _)| *t <= time_s).or(self.before.as_ref());
        let action = match in_force {
            Some((t, v)) if time_s - t <= self.topics.action_timeout_s => *v,
            _ => [0.0; 3],
        };
        if let Some(mut frame) = self.pending.take() {
            frame.action = action;
            visit(Event::Frame(frame))?;
        }
        self.before = self.since.pop().or(self.before);
        self.since.clear();
        for e in std::mem::take(&mut self.after) {
            visit(e)?;
        }
        Ok(())
    }

    fn finish(mut self, visit: &mut impl FnMut(Event) -> Result<(), Error>) -> Result<(), Error> {
        let Some(last) = self.pending.as_ref().map(|f| f.time_s) else { return Ok(()) };
        let period = self.period_s.unwrap_or(self.topics.action_timeout_s);
        self.settle(last + period, visit)
    }
}

fn expect(m: &Message<'_>, types: &[&str]) -> Result<(), Error> {
    let ty = m.schema.map(|s| s.name).unwrap_or("(no schema)");
    if types.contains(&ty) {
        Ok(())
    } else {
        Err(Error::Schema(format!("{}: {} carries {ty}, expected {}", m.file, m.topic, types.join(" or "))))
    }
}

fn decode_frame(ty: &str, payload: &[u8]) -> Result<Frame, Error> {
    let mut r = Reader::new(payload)?;
    let (stamp, _frame_id) = r.header()?;
    let picture = match ty {
        "sensor_msgs/msg/Image" => {
            let height = r.u32()?;
            let width = r.u32()?;
            let encoding = r.string()?;
            let _bigendian = r.u8()?;
            let step = r.u32()?;
            Picture::Raw { width, height, step, encoding }
        }
        "sensor_msgs/msg/CompressedImage" => Picture::Compressed { format: r.string()? },
        other => {
            return Err(Error::Schema(format!("carries {other}, expected sensor_msgs/msg/Image or CompressedImage")))
        }
    };
    let data = r.bytes()?.to_vec();
    // A zero stamp is an unstamped frame, as the node reads it.
    let stamp_s = (stamp != 0.0).then_some(stamp);
    Ok(Frame { time_s: 0.0, stamp_s, picture, data, action: [0.0; 3], label: None })
}

fn decode_twist(stamped: bool, payload: &[u8]) -> Result<[f64; 3], Error> {
    let mut r = Reader::new(payload)?;
    if stamped {
        r.header()?;
    }
    let (x, y, _z) = (r.f64()?, r.f64()?, r.f64()?);
    let (_rx, _ry, wz) = (r.f64()?, r.f64()?, r.f64()?);
    Ok([x, y, wz])
}
