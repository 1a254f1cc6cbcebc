//! Reading `~/inference_stats` out of a rosbag2 recording.
//!
//! Owns finding the MCAP files (a rosbag2 directory or one `.mcap` file),
//! checking that the recorded message definition is the one this tool decodes,
//! and turning every message on the topic into [`Stats`]. A bag without the
//! topic, a truncated file, an sqlite3 bag or an older definition is an error.
//! It keeps nothing between calls: a malformed record fails that read alone.

use std::path::{Path, PathBuf};

use crate::cdr::{decode, Stats};
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
];

/// The top-level fields of a ros2msg definition (constants and comments skipped).
pub fn fields_of(definition: &str) -> Vec<(String, String)> {
    definition
        .lines()
        .take_while(|l| !l.starts_with("===="))
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .filter(|l| !l.is_empty() && !l.contains('='))
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let ty = it.next()?.rsplit('/').next()?.to_string();
            Some((ty, it.next()?.to_string()))
        })
        .collect()
}

fn mcap_files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(Error::Input(format!("{}: no such file or directory", path.display())));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    if files.iter().any(|f| f.extension().is_some_and(|e| e == "db3"))
        && !files.iter().any(|f| f.extension().is_some_and(|e| e == "mcap"))
    {
        return Err(Error::Input(format!(
            "{}: sqlite3 storage is not supported; record with `ros2 bag record -s mcap` or convert with `ros2 bag convert`",
            path.display()
        )));
    }
    files.retain(|f| f.extension().is_some_and(|e| e == "mcap"));
    if files.is_empty() {
        return Err(Error::Input(format!("{}: no .mcap file in this rosbag2 directory", path.display())));
    }
    Ok(files)
}

/// Every `InferenceStats` on `topic`, in log order.
pub fn read(path: &Path, topic: &str) -> Result<Vec<Stats>, Error> {
    let mut out = Vec::new();
    let mut topics = std::collections::BTreeSet::new();
    for file in mcap_files(path)? {
        let bytes = std::fs::read(&file).map_err(|e| Error::Input(format!("{}: {e}", file.display())))?;
        read_mcap(&bytes, topic, &file.display().to_string(), &mut out, &mut topics)?;
    }
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
    read_mcap(bytes, topic, name, &mut out, &mut Default::default())?;
    Ok(out)
}

fn read_mcap(
    bytes: &[u8],
    topic: &str,
    name: &str,
    out: &mut Vec<Stats>,
    topics: &mut std::collections::BTreeSet<String>,
) -> Result<(), Error> {
    let mut stream =
        mcap::MessageStream::new(bytes).map_err(|e| Error::Input(format!("{name}: not an MCAP file: {e}")))?;
    let mut checked = false;
    for i in 0.. {
        // mcap 0.26 panics on some malformed chunk records (an out-of-range
        // slice, found by `mobile_vla_fuzz bag`): a broken bag is an input
        // error, never a crash of the report.
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stream.next()))
            .map_err(|_| Error::Input(format!("{name}: malformed MCAP after {i} messages (the mcap reader failed)")))?;
        let Some(msg) = next else { break };
        let msg = msg.map_err(|e| Error::Input(format!("{name}: unreadable after {i} messages (truncated?): {e}")))?;
        topics.insert(msg.channel.topic.clone());
        if msg.channel.topic != topic {
            continue;
        }
        if !checked {
            check_schema(&msg.channel)?;
            checked = true;
        }
        let s = decode(&msg.data).map_err(|e| Error::Decode(format!("{name}: message {i} on {topic}: {e}")))?;
        out.push(s);
    }
    Ok(())
}

fn check_schema(channel: &mcap::Channel) -> Result<(), Error> {
    let schema = channel.schema.as_ref().ok_or_else(|| Error::Schema(format!("{} has no schema", channel.topic)))?;
    if schema.name != TYPE {
        return Err(Error::Schema(format!("{} carries {}, expected {TYPE}", channel.topic, schema.name)));
    }
    if channel.message_encoding != "cdr" {
        return Err(Error::Schema(format!(
            "{} is encoded as {}, expected cdr",
            channel.topic, channel.message_encoding
        )));
    }
    let recorded = fields_of(&String::from_utf8_lossy(&schema.data));
    let expected: Vec<(String, String)> = FIELDS.iter().map(|(t, n)| (t.to_string(), n.to_string())).collect();
    if recorded != expected {
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
        let got = fields_of(msg);
        let want: Vec<(String, String)> = FIELDS.iter().map(|(t, n)| (t.to_string(), n.to_string())).collect();
        assert_eq!(got, want);
    }
}
