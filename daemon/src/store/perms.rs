//! State readable by the daemon's user only. The state directory holds the
//! session-signing key, API key hashes, clinic studies and face photos: on a
//! shared box another local user must not read any of it, whatever umask
//! the daemon was started with. Files are created owner-only (the process
//! umask is set to 077 before the store opens, so sled's own files are
//! too), and at every open the whole tree is checked: a looser mode (left by
//! an older version, a restore, a hand copy) is repaired and logged.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Directories: rwx for the owner only.
pub const DIR_MODE: u32 = 0o700;
/// Files: rw for the owner only.
pub const FILE_MODE: u32 = 0o600;

/// From now on, everything this process creates is owner-only.
pub fn owner_only_umask() {
    // SAFETY: umask(2) cannot fail and touches no memory; it changes the
    // process-wide creation mask, which is what is wanted here.
    unsafe {
        libc::umask(0o077);
    }
}

/// Create `dir` (and missing parents) owner-only.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(DIR_MODE)
        .create(dir)
}

/// Tighten every directory and file under `root` (itself included) that
/// group or others may use; returns each repaired path with its old mode.
/// Symbolic links are not followed.
pub fn repair(root: &Path) -> std::io::Result<Vec<(PathBuf, u32)>> {
    let mut fixed = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p)?;
        let ft = meta.file_type();
        if ft.is_symlink() {
            continue;
        }
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            let want = if ft.is_dir() { DIR_MODE } else { mode & 0o700 };
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(want))?;
            fixed.push((p.clone(), mode));
        }
        if ft.is_dir() {
            for e in std::fs::read_dir(&p)? {
                stack.push(e?.path());
            }
        }
    }
    Ok(fixed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A state directory left world-readable (as umask 022 made it) is
    /// repaired at open, and everything the store then creates, sled's
    /// files and blobs included, is owner-only.
    #[test]
    fn loose_state_is_repaired_and_new_state_is_owner_only() {
        let d = tempfile::tempdir().unwrap();
        let state = d.path().join("state");
        std::fs::create_dir_all(state.join("blobs/originals")).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        let loose = state.join("blobs/originals/old.jpg");
        std::fs::write(&loose, b"x").unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o644)).unwrap();
        let store = crate::store::Store::open(&state).unwrap();
        store.blobs.put("originals/new.jpg", b"y").unwrap();
        store.secret("some_key").unwrap();
        store.flush().unwrap();
        let mut seen = 0;
        let mut stack = vec![state.clone()];
        while let Some(p) = stack.pop() {
            let m = mode(&p);
            assert_eq!(m & 0o077, 0, "{} is {m:o}", p.display());
            if p.is_dir() {
                stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
            }
            seen += 1;
        }
        assert!(seen > 8, "sled's files were looked at too ({seen})");
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&loose), 0o600);
        assert_eq!(mode(&state.join("blobs/originals/new.jpg")), 0o600);
    }
}
