//! `mobile_vla_msgs/msg/InferenceStats` out of a recording: the node's per-run telemetry.
//!
//! Owns that message's definition as this reader expects it (checked against
//! the recorded schema, so a bag of another version is named, not misread),
//! its CDR layout, and reading every message of it on one topic.

use std::path::Path;

use crate::bag::{self, Schema};
use crate::cdr::Reader;
use crate::Error;

pub const TYPE: &str = "mobile_vla_msgs/msg/InferenceStats";

/// The fields this tool decodes, in order, as the .msg file declares them.
pub const FIELDS: &[(&str, &str)] = &[
    ("Header", "header"),
    ("uint64", "frame_seq"),
    ("uint64", "command_seq"),
    ("string", "policy"),
    ("string", "execution_provider"),
    ("bool", "fallback_active"),
    ("uint8", "outcome"),
    ("float64", "frame_age_ms"),
    ("float64", "preprocess_ms"),
    ("float64", "inference_ms"),
    ("float64", "postprocess_ms"),
    ("float64", "total_ms"),
    ("float64", "stamp_to_publish_ms"),
    ("uint32", "frames_dropped"),
    ("Twist", "action"),
    ("bool", "shadow"),
    ("uint32", "shadow_samples"),
    ("float64[3]", "shadow_mae"),
    ("float64[3]", "shadow_sign_agreement"),
];

/// The leading fields [`decode`] reads (through `action`); those after it are appended, newer ones.
const DECODED: usize = 15;

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

/// One `InferenceStats` from its CDR payload.
pub fn decode(payload: &[u8]) -> Result<Stats, Error> {
    let mut r = Reader::new(payload)?;
    Ok(Stats {
        stamp_s: r.time()?,
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

/// Every `InferenceStats` on `topic`, in log order.
pub fn read(path: &Path, topic: &str) -> Result<Vec<Stats>, Error> {
    let mut out = Vec::new();
    let topics = bag::read(path, collect(topic, &mut out))?;
    if out.is_empty() {
        return Err(Error::Input(format!(
            "{}: no messages on {topic} (topics in the bag: {})",
            path.display(),
            if topics.is_empty() { "none".to_string() } else { topics.into_iter().collect::<Vec<_>>().join(", ") }
        )));
    }
    Ok(out)
}

/// The `InferenceStats` on `topic` in one MCAP file's bytes (`name` for errors).
pub fn stats_in(bytes: &[u8], topic: &str, name: &str) -> Result<Vec<Stats>, Error> {
    let mut out = Vec::new();
    bag::read_bytes(bytes, name, collect(topic, &mut out))?;
    Ok(out)
}

/// Decodes every message on `topic` into `out`, its schema checked once.
fn collect<'o>(topic: &'o str, out: &'o mut Vec<Stats>) -> impl FnMut(&bag::Message<'_>) -> Result<(), Error> + 'o {
    let mut checked = false;
    move |msg| {
        if msg.topic != topic {
            return Ok(());
        }
        if !checked {
            check_schema(msg)?;
            checked = true;
        }
        let s = decode(msg.data)
            .map_err(|e| Error::Decode(format!("{}: message {} on {topic}: {e}", msg.file, msg.index)))?;
        out.push(s);
        Ok(())
    }
}

fn check_schema(msg: &bag::Message<'_>) -> Result<(), Error> {
    let schema: Schema<'_> = msg.schema.ok_or_else(|| Error::Schema(format!("{} has no schema", msg.topic)))?;
    if schema.name != TYPE {
        return Err(Error::Schema(format!("{} carries {}, expected {TYPE}", msg.topic, schema.name)));
    }
    if msg.encoding != "cdr" {
        return Err(Error::Schema(format!("{} is encoded as {}, expected cdr", msg.topic, msg.encoding)));
    }
    if schema.data.is_empty() {
        // An sqlite3 bag from before stored definitions: its type's name is all there is to check.
        return Ok(());
    }
    let recorded = bag::fields_of(&String::from_utf8_lossy(schema.data));
    let expected: Vec<(String, String)> = FIELDS.iter().map(|(t, n)| (t.to_string(), n.to_string())).collect();
    // A bag from before the shadow fields were appended holds every field this reader decodes.
    let decoded = &expected[..DECODED];
    if recorded != expected && recorded != decoded {
        let names = |v: &[(String, String)]| v.iter().map(|(t, n)| format!("{t} {n}")).collect::<Vec<_>>().join(", ");
        return Err(Error::Schema(format!(
            "the bag's {TYPE} definition differs from this tool's (recorded with another version of mobile_vla_msgs?)\n  bag:      {}\n  expected: {}",
            names(&recorded),
            names(&expected)
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_msg_file_and_the_decoder_agree() {
        let msg = include_str!("../../../msg/msg/InferenceStats.msg");
        let got = bag::fields_of(msg);
        let want: Vec<(String, String)> = FIELDS.iter().map(|(t, n)| (t.to_string(), n.to_string())).collect();
        assert_eq!(got, want);
        assert_eq!(FIELDS[DECODED - 1], ("Twist", "action"), "decode reads through the action");
    }
}
