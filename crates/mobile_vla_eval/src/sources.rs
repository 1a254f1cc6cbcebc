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
    /// Its name in reports and figures: its file or folder name, or, where
    /// two share one, its path below the folder all episodes share.
    pub name: String,
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
            .map(|p| Source { format: Format::of(&p).expect("filtered"), path: p, name: String::new() })
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
        Some(format) if path.exists() => Ok(vec![Source { path: path.to_path_buf(), format, name: String::new() }]),
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
                if !out.iter().any(|o| o.path == s.path) {
                    out.push(s);
                }
            }
        }
    }
    name(&mut out);
    Ok(out)
}

fn name(sources: &mut [Source]) {
    let file =
        |s: &Source| s.path.file_name().map_or_else(|| s.path.display().to_string(), |n| n.to_string_lossy().into());
    let names: Vec<String> = sources.iter().map(file).collect();
    let unique = names.iter().enumerate().all(|(i, n)| !names[..i].contains(n));
    if unique {
        sources.iter_mut().zip(names).for_each(|(s, n)| s.name = n);
        return;
    }
    // The longest folder every path starts with.
    let paths: Vec<PathBuf> = sources.iter().map(|s| std::path::absolute(&s.path).unwrap_or(s.path.clone())).collect();
    let mut common = paths[0].parent().map(Path::to_path_buf).unwrap_or_default();
    while !paths.iter().all(|p| p.starts_with(&common)) && common.pop() {}
    for (s, p) in sources.iter_mut().zip(&paths) {
        s.name = p.strip_prefix(&common).unwrap_or(p).display().to_string();
    }
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
        let names: Vec<&str> = got.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["a.hdf5", "b.h5", "bag", "c.mcap"]);
        assert_eq!(got[2].format, Format::Bag);
        // Two episodes of one name: each named by its path below their common folder.
        std::fs::create_dir(d.path().join("day2")).unwrap();
        std::fs::write(d.path().join("day2/b.h5"), b"").unwrap();
        let got = resolve(&[format!("{dir}/b.h5"), format!("{dir}/day2")]).unwrap();
        assert_eq!(got.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["b.h5", "day2/b.h5"]);
        let e = resolve(&[format!("{dir}/*.hdf6")]).unwrap_err();
        assert!(e.contains("matches no file"), "{e}");
        let e = resolve(&[format!("{dir}/notes.txt")]).unwrap_err();
        assert!(e.contains("not an episode"), "{e}");
    }
}
