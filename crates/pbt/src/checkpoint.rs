//! Checkpoint files: naming, atomic placement, pruning.
//!
//! A trainable writes to a temporary path; the engine then (optionally) fsyncs it, renames
//! it to its final name and fsyncs the folder, so a final name always holds a complete
//! checkpoint. The database refers to checkpoints by path relative to the run folder.

use std::collections::HashSet;
use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{PbtError, Result};

/// Folder of the checkpoints inside a run folder.
pub const DIR: &str = "checkpoints";

/// Relative path of member `member`'s checkpoint after its `interval`-th interval (0-based);
/// unique over the run because a member's interval count only grows.
pub fn relative_path(member: usize, interval: u64) -> String {
    format!("{DIR}/m{member:04}-i{interval:06}.ckpt")
}

/// The temporary path a checkpoint is written to before being renamed to `final_path`.
pub fn temp_path(final_path: &Path) -> PathBuf {
    let mut s = final_path.as_os_str().to_owned();
    s.push(".tmp");
    PathBuf::from(s)
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> PbtError {
    let path = path.to_path_buf();
    move |source| PbtError::Io { op, path, source }
}

/// fsyncs a file, or every file in a folder (trainables may write a folder).
fn sync_tree(path: &Path) -> Result<()> {
    let meta = fs::metadata(path).map_err(io("stat checkpoint", path))?;
    if meta.is_dir() {
        for entry in fs::read_dir(path).map_err(io("list checkpoint", path))? {
            let entry = entry.map_err(io("list checkpoint", path))?;
            sync_tree(&entry.path())?;
        }
    }
    fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(io("fsync checkpoint", path))
}

/// Moves the complete checkpoint at `temp` to `final_path` atomically.
pub fn commit(temp: &Path, final_path: &Path, sync: bool) -> Result<()> {
    if !temp.exists() {
        return Err(PbtError::Io {
            op: "find checkpoint written by the trainable",
            path: temp.to_path_buf(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    if sync {
        sync_tree(temp)?;
    }
    if final_path.is_dir() {
        fs::remove_dir_all(final_path).map_err(io("replace checkpoint", final_path))?;
    }
    fs::rename(temp, final_path).map_err(io("rename checkpoint", final_path))?;
    if sync && let Some(parent) = final_path.parent() {
        fs::File::open(parent)
            .and_then(|f| f.sync_all())
            .map_err(io("fsync folder", parent))?;
    }
    Ok(())
}

/// Removes a checkpoint (file or folder); a missing one is fine.
pub fn remove(path: &Path) -> Result<()> {
    let r = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(PbtError::Io {
            op: "remove checkpoint",
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

/// Removes every entry of the checkpoint folder that `keep` (relative paths) does not name:
/// leftovers of a killed process. Call only while no worker is writing.
pub fn sweep(run_dir: &Path, keep: &HashSet<String>) -> Result<usize> {
    let dir = run_dir.join(DIR);
    let mut removed = 0;
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io("list checkpoints", &dir)(e)),
    };
    for entry in entries {
        let entry = entry.map_err(io("list checkpoints", &dir))?;
        let rel = format!("{DIR}/{}", entry.file_name().to_string_lossy());
        if !keep.contains(&rel) {
            remove(&entry.path())?;
            removed += 1;
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commit_places_file_and_sweep_keeps_referenced_ones() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(DIR)).unwrap();
        let a = dir.path().join(relative_path(0, 1));
        let b = dir.path().join(relative_path(1, 1));
        for (p, text) in [(&a, "a"), (&b, "b")] {
            let t = temp_path(p);
            fs::write(&t, text).unwrap();
            commit(&t, p, true).unwrap();
            assert!(!t.exists());
            assert_eq!(fs::read_to_string(p).unwrap(), text);
        }
        // A leftover temporary file from a killed write.
        fs::write(temp_path(&dir.path().join(relative_path(2, 0))), "partial").unwrap();
        let keep: HashSet<String> = [relative_path(0, 1)].into_iter().collect();
        assert_eq!(sweep(dir.path(), &keep).unwrap(), 2);
        assert!(a.exists() && !b.exists());
        let missing = dir.path().join("nope");
        assert!(commit(&temp_path(&missing), &missing, false).is_err());
    }
}
