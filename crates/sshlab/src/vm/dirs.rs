//! Directories and files the lab makes for someone else to use, with explicit modes.
//!
//! `mkdir(2)` and `open(2)` narrow the mode they are given by the caller's umask, and `sudo`
//! keeps the caller's umask: under `umask 077`, `sudo sshlab net up` made `/var/lib/sshlab`
//! 0700 and the runners' user could not reach the results directory below it. Whoever uses
//! what the lab makes (the runners' user passing through root's runtime directory to its
//! working directory, a user's `vm status` reading root's state file, the target's accounts
//! reading `/etc/passwd` and their homes) must not depend on that, so every directory and
//! shared file is chmod-ed to its mode after it is made. Existing directories are not touched
//! here: what may be done to one someone else made is the caller's decision.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// `mkdir -p dir`, every directory it makes with exactly `mode` (whatever the umask). Returns
/// the directories it made, outermost first; one that appears meanwhile (made by someone
/// else) is left as it is.
pub fn create_dir_all(dir: &Path, mode: u32) -> io::Result<Vec<PathBuf>> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|a| !a.as_os_str().is_empty() && fs::symlink_metadata(a).is_err())
        .collect();
    let mut made = Vec::new();
    for d in missing.into_iter().rev() {
        match fs::DirBuilder::new().mode(mode).create(d) {
            Ok(()) => {
                fs::set_permissions(d, fs::Permissions::from_mode(mode))?;
                made.push(d.to_path_buf());
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && d.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(made)
}

/// Writes `contents` to `path` (created or truncated) and gives it exactly `mode`.
pub fn write_file(path: &Path, contents: &[u8], mode: u32) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)?;
    f.write_all(contents)?;
    f.set_permissions(fs::Permissions::from_mode(mode))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_are_exact_whatever_the_umask() {
        // 0777 is wider than any umask lets mkdir/open make: only an explicit chmod gives it.
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("a/b/c");
        let made = create_dir_all(&deep, 0o777).unwrap();
        assert_eq!(
            made,
            [d.path().join("a"), d.path().join("a/b"), deep.clone()]
        );
        for m in &made {
            assert_eq!(
                fs::metadata(m).unwrap().permissions().mode() & 0o7777,
                0o777
            );
        }
        // Existing directories are left alone.
        fs::set_permissions(d.path().join("a"), fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(create_dir_all(&deep, 0o755).unwrap(), Vec::<PathBuf>::new());
        let a = fs::metadata(d.path().join("a")).unwrap();
        assert_eq!(a.permissions().mode() & 0o7777, 0o700);

        let f = deep.join("f");
        write_file(&f, b"x", 0o666).unwrap();
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o666
        );
        write_file(&f, b"yz", 0o640).unwrap();
        assert_eq!(fs::read(&f).unwrap(), b"yz");
        assert_eq!(
            fs::metadata(&f).unwrap().permissions().mode() & 0o7777,
            0o640
        );
    }
}
