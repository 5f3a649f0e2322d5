//! Data files are the owner's alone: directories this daemon creates are
//! 0700, its files 0600, whatever the umask.
//!
//! The store holds GitHub answers read with the daemon's token (private
//! repositories among them) and the P2P identity is the node's secret key;
//! neither may be readable by other users of the machine. A directory that
//! already exists keeps its mode (the operator's, or systemd's
//! `StateDirectory=`); a store file that exists is narrowed to 0600.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Makes sure `path` exists with mode 0600 (its directory created 0700),
/// without changing its contents.
pub fn create_file(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        create_dir(dir)?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_whatever_the_umask() {
        let root = std::env::temp_dir().join(format!("ghcache-private-{}", std::process::id()));
        let file = root.join("a/b/cache.redb");
        create_file(&file).unwrap();
        fs::write(&file, b"kept").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        create_file(&file).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read(&file).unwrap(), b"kept");
        assert_eq!(mode(&root.join("a/b")), 0o700);
        assert_eq!(mode(&root.join("a")), 0o700);
        fs::remove_dir_all(&root).unwrap();
    }
}
