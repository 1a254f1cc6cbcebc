//! Messages out of a rosbag2 recording, whatever their type.
//!
//! Owns finding the storage files (a rosbag2 directory, one `.mcap` file or
//! one `.db3` file) and walking every message of them with its topic, schema
//! and raw payload ([`Message`]), from either storage: MCAP,
//! and sqlite3 (the Humble default; its schema is the message type alone
//! where the bag predates stored definitions), and listing its topics
//! without reading its messages where the storage indexes them. Messages come
//! in each file's order (rosbag2 writes them as they arrive; sqlite3's are
//! sorted by time), split files in their number's order. A truncated or
//! malformed file is an error, never a crash. It keeps nothing between
//! calls: a malformed record fails that read alone. Decoding a payload is the
//! caller's (`cdr`, `stats`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::Error;

/// A message type's recorded definition.
#[derive(Debug, Clone, Copy)]
pub struct Schema<'a> {
    /// `pkg/msg/Type`.
    pub name: &'a str,
    pub encoding: &'a str,
    pub data: &'a [u8],
}

/// One recorded message.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    pub topic: &'a str,
    pub schema: Option<Schema<'a>>,
    /// The payload's encoding (`cdr`).
    pub encoding: &'a str,
    /// When it was recorded, nanoseconds.
    pub log_time_ns: u64,
    pub data: &'a [u8],
    /// Its position in its file, for errors.
    pub index: usize,
    /// Its file, for errors.
    pub file: &'a str,
}

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

/// The storage files of the recording at `path`, in order.
fn storage_files(path: &Path) -> Result<Vec<PathBuf>, Error> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.is_dir() {
        return Err(Error::Input(format!("{}: no such file or directory", path.display())));
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| Error::Input(format!("{}: {e}", path.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|f| f.extension().is_some_and(|e| e == "mcap" || e == "db3"))
        .collect();
    // rosbag2 splits as NAME_0, NAME_1, ... NAME_10: in their number's order, not the text's.
    files.sort_by_key(|f| {
        let stem = f.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let number = stem.rsplit('_').next().and_then(|n| n.parse::<u64>().ok());
        (number, stem)
    });
    if files.is_empty() {
        return Err(Error::Input(format!("{}: no .mcap or .db3 file in this rosbag2 directory", path.display())));
    }
    Ok(files)
}

/// Calls `visit` with every message of the recording at `path`, in log order;
/// returns every topic seen.
pub fn read(path: &Path, mut visit: impl FnMut(&Message<'_>) -> Result<(), Error>) -> Result<BTreeSet<String>, Error> {
    let mut topics = BTreeSet::new();
    for file in storage_files(path)? {
        let name = file.display().to_string();
        if file.extension().is_some_and(|e| e == "db3") {
            read_sqlite(&file, &name, &mut topics, &mut visit)?;
            continue;
        }
        let bytes = std::fs::read(&file).map_err(|e| Error::Input(format!("{name}: {e}")))?;
        read_mcap(&bytes, &name, &mut topics, &mut visit)?;
    }
    Ok(topics)
}

/// Every topic of the recording at `path` with its type, without reading its
/// messages where the storage has an index (an MCAP summary, sqlite3's topics table).
pub fn topics(path: &Path) -> Result<BTreeSet<(String, String)>, Error> {
    let mut out = BTreeSet::new();
    for file in storage_files(path)? {
        let name = file.display().to_string();
        if file.extension().is_some_and(|e| e == "db3") {
            let bad = |e| sqlite_error(&name, e);
            let db = open_sqlite(&file, &name)?;
            let mut q = db.prepare("SELECT name, type FROM topics").map_err(bad)?;
            for row in q.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).map_err(bad)? {
                out.insert(row.map_err(bad)?);
            }
            continue;
        }
        let bytes = std::fs::read(&file).map_err(|e| Error::Input(format!("{name}: {e}")))?;
        // A summary that does not read is no answer: the messages themselves are.
        let summary =
            std::panic::catch_unwind(|| mcap::read::Summary::read(&bytes)).ok().and_then(Result::ok).flatten();
        match summary {
            Some(s) => out.extend(
                s.channels
                    .values()
                    .map(|c| (c.topic.clone(), c.schema.as_ref().map(|s| s.name.clone()).unwrap_or_default())),
            ),
            None => {
                let mut seen = BTreeSet::new();
                read_mcap(&bytes, &name, &mut BTreeSet::new(), &mut |m: &Message<'_>| {
                    seen.insert((m.topic.to_string(), m.schema.map(|s| s.name.to_string()).unwrap_or_default()));
                    Ok(())
                })?;
                out.extend(seen);
            }
        }
    }
    Ok(out)
}

/// As [`read`], over one MCAP file's bytes (`name` for errors).
pub fn read_bytes(
    bytes: &[u8],
    name: &str,
    mut visit: impl FnMut(&Message<'_>) -> Result<(), Error>,
) -> Result<BTreeSet<String>, Error> {
    let mut topics = BTreeSet::new();
    read_mcap(bytes, name, &mut topics, &mut visit)?;
    Ok(topics)
}

fn read_mcap(
    bytes: &[u8],
    name: &str,
    topics: &mut BTreeSet<String>,
    visit: &mut impl FnMut(&Message<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let mut stream =
        mcap::MessageStream::new(bytes).map_err(|e| Error::Input(format!("{name}: not an MCAP file: {e}")))?;
    for i in 0.. {
        // mcap 0.26 panics on some malformed chunk records (an out-of-range
        // slice, found by `mobile_vla_fuzz bag`): a broken bag is an input
        // error, never a crash of the reader.
        let next = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| stream.next()))
            .map_err(|_| Error::Input(format!("{name}: malformed MCAP after {i} messages (the mcap reader failed)")))?;
        let Some(msg) = next else { break };
        let msg = msg.map_err(|e| Error::Input(format!("{name}: unreadable after {i} messages (truncated?): {e}")))?;
        topics.insert(msg.channel.topic.clone());
        let schema =
            msg.channel.schema.as_ref().map(|s| Schema { name: &s.name, encoding: &s.encoding, data: &s.data });
        visit(&Message {
            topic: &msg.channel.topic,
            schema,
            encoding: &msg.channel.message_encoding,
            log_time_ns: msg.log_time,
            data: &msg.data,
            index: i,
            file: name,
        })?;
    }
    Ok(())
}

fn read_sqlite(
    file: &Path,
    name: &str,
    topics: &mut BTreeSet<String>,
    visit: &mut impl FnMut(&Message<'_>) -> Result<(), Error>,
) -> Result<(), Error> {
    let bad = |e| sqlite_error(name, e);
    let db = open_sqlite(file, name)?;
    // Since Iron, rosbag2 stores each type's definition; Humble's bags have the type's name alone.
    let mut definitions = std::collections::HashMap::new();
    let has_definitions = db
        .query_row("SELECT count(*) FROM sqlite_master WHERE type='table' AND name='message_definitions'", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(bad)?
        > 0;
    if has_definitions {
        let mut q = db
            .prepare("SELECT topic_type, encoding, encoded_message_definition FROM message_definitions")
            .map_err(bad)?;
        let rows = q.query_map([], |r| Ok((r.get::<_, String>(0)?, (r.get::<_, String>(1)?, r.get::<_, String>(2)?))));
        for row in rows.map_err(bad)? {
            let (ty, def) = row.map_err(bad)?;
            definitions.insert(ty, def);
        }
    }
    let mut q = db
        .prepare(
            "SELECT t.name, t.type, t.serialization_format, m.timestamp, m.data \
             FROM messages m JOIN topics t ON m.topic_id = t.id ORDER BY m.timestamp, m.id",
        )
        .map_err(bad)?;
    let mut rows = q.query([]).map_err(bad)?;
    let empty = (String::new(), String::new());
    for i in 0.. {
        let row = rows
            .next()
            .map_err(|e| Error::Input(format!("{name}: unreadable after {i} messages (truncated?): {e}")))?;
        let Some(row) = row else { break };
        let get = |e: rusqlite::Error| Error::Input(format!("{name}: message {i}: {e}"));
        let topic: String = row.get(0).map_err(get)?;
        let ty: String = row.get(1).map_err(get)?;
        let encoding: String = row.get(2).map_err(get)?;
        let time: i64 = row.get(3).map_err(get)?;
        let data: Vec<u8> = row.get(4).map_err(get)?;
        let (schema_encoding, definition) = definitions.get(&ty).unwrap_or(&empty);
        topics.insert(topic.clone());
        visit(&Message {
            topic: &topic,
            schema: Some(Schema { name: &ty, encoding: schema_encoding, data: definition.as_bytes() }),
            encoding: &encoding,
            log_time_ns: time.max(0) as u64,
            data: &data,
            index: i,
            file: name,
        })?;
    }
    Ok(())
}

fn sqlite_error(name: &str, e: rusqlite::Error) -> Error {
    Error::Input(format!("{name}: not a readable rosbag2 sqlite3 file: {e}"))
}

fn open_sqlite(file: &Path, name: &str) -> Result<rusqlite::Connection, Error> {
    rusqlite::Connection::open_with_flags(file, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| sqlite_error(name, e))
}
