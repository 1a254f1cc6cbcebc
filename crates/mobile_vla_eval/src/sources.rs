//! Which episodes a run scores: files, folders and globs, resolved once, in a stable order.
//!
//! Owns what counts as an episode: a team HDF5 file (`.h5`, `.hdf5`), a bag
//! file (`.mcap`, `.db3`) or a rosbag2 folder (one with `metadata.yaml`); a
//! plain folder holds episodes one level down. A path that names nothing,
//! or a glob that matches nothing, is an error naming it.

use std::path::{Path, PathBuf};

use mobile_vla_recordings::episode::Format;

/// One episode to score.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    pub path: PathBuf,
    pub format: Format,
}

impl Source {
    /// Its name in reports: the file or folder name.
    pub fn name(&self) -> String {
        self.path.file_name().map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
    }
}

fn is_bag_dir(p: &Path) -> bool {
    p.join("metadata.yaml").is_file()
}

fn one(path: &Path) -> Result<Vec<Source>, String> {
    if path.is_dir() && !is_bag_dir(path) {
        let mut found: Vec<Source> = std::fs::read_dir(path)
            .map_err(|e| format!("{}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| (p.is_file() || is_bag_dir(p)) && Format::of(p).is_some())
            .map(|p| Source { format: Format::of(&p).expect("filtered"), path: p })
            .collect();
        found.sort_by(|a, b| a.path.cmp(&b.path));
        if found.is_empty() {
            return Err(format!(
                "{}: no episode in this folder (.h5, .hdf5, .mcap, .db3 or rosbag2 folders)",
                path.display()
            ));
        }
        return Ok(found);
    }
    match Format::of(path) {
        Some(format) if path.exists() => Ok(vec![Source { path: path.to_path_buf(), format }]),
        _ if !path.exists() => Err(format!("{}: no such file or folder", path.display())),
        _ => Err(format!("{}: not an episode (expected .h5, .hdf5, .mcap, .db3 or a rosbag2 folder)", path.display())),
    }
}

/// The episodes named by `args` (paths, folders or globs), each once, in the order given.
pub fn resolve(args: &[String]) -> Result<Vec<Source>, String> {
    let mut out: Vec<Source> = Vec::new();
    for arg in args {
        let paths: Vec<PathBuf> = if arg.contains(['*', '?', '[']) {
            let matched: Vec<PathBuf> =
                glob::glob(arg).map_err(|e| format!("{arg}: not a valid glob: {e}"))?.filter_map(Result::ok).collect();
            if matched.is_empty() {
                return Err(format!("{arg}: matches no file"));
            }
            matched
        } else {
            vec![PathBuf::from(arg)]
        };
        for p in paths {
            for s in one(&p)? {
                if !out.contains(&s) {
                    out.push(s);
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_globs_and_files_resolve_to_each_episode_once() {
        let d = tempfile::tempdir().unwrap();
        for f in ["b.h5", "a.hdf5", "notes.txt", "c.mcap"] {
            std::fs::write(d.path().join(f), b"").unwrap();
        }
        std::fs::create_dir(d.path().join("bag")).unwrap();
        std::fs::write(d.path().join("bag/metadata.yaml"), b"").unwrap();
        let dir = d.path().display().to_string();
        let got = resolve(&[dir.clone(), format!("{dir}/*.h5")]).unwrap();
        let names: Vec<String> = got.iter().map(Source::name).collect();
        assert_eq!(names, ["a.hdf5", "b.h5", "bag", "c.mcap"]);
        assert_eq!(got[2].format, Format::Bag);
        let e = resolve(&[format!("{dir}/*.hdf6")]).unwrap_err();
        assert!(e.contains("matches no file"), "{e}");
        let e = resolve(&[format!("{dir}/notes.txt")]).unwrap_err();
        assert!(e.contains("not an episode"), "{e}");
    }
}
