//! The guest kernel the lab's VMs boot where Nix does not build one: a Debian
//! `/boot/vmlinuz-*-amd64` whose modules include `sch_netem` (the guests apply netem when the
//! host cannot). Used by the qemu backend and by the test kit's throw-away guests.
//!
//! [`find`] takes the one Debian's installed `linux-image-amd64` points to (the release's own
//! kernel, what a Debian user has), else the newest: another kernel in `/boot`, such as the
//! backports one that `scripts/install-deps vm` adds for netem's seed, is not picked up by every
//! guest because it is newer. [`find_at_least`] finds that one.

use std::fs;
use std::path::{Path, PathBuf};

/// Where Debian installs kernels.
pub const BOOT: &str = "/boot";
/// Where a kernel's modules live, by release.
pub const MODULES: &str = "/lib/modules";
/// dpkg's record of what is installed.
const DPKG_STATUS: &str = "/var/lib/dpkg/status";

/// The guests' kernel: the one the installed `linux-image-amd64` depends on, when it is in
/// `/boot` with `sch_netem`; else the newest `/boot/vmlinuz-*-amd64` with `sch_netem`.
pub fn find() -> Option<PathBuf> {
    let found = candidates();
    let stock = fs::read_to_string(DPKG_STATUS)
        .ok()
        .and_then(|s| stock_release(&s));
    if let Some(stock) = stock
        && let Some((_, p)) = found.iter().find(|(_, p)| release(p) == Some(&stock))
    {
        return Some(p.clone());
    }
    found.last().map(|(_, p)| p.clone())
}

/// The newest `/boot/vmlinuz-*-amd64` with `sch_netem` whose version is at least
/// `major.minor` (netem's seed needs 6.6).
pub fn find_at_least(major: u64, minor: u64) -> Option<PathBuf> {
    candidates()
        .into_iter()
        .rev()
        .find(|(key, _)| key.as_slice() >= [major, minor].as_slice())
        .map(|(_, p)| p)
}

/// Every `/boot/vmlinuz-*-amd64` whose modules include `sch_netem`, oldest first.
fn candidates() -> Vec<(Vec<u64>, PathBuf)> {
    let Ok(dir) = fs::read_dir(BOOT) else {
        return Vec::new();
    };
    let mut found: Vec<(Vec<u64>, PathBuf)> = dir
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("vmlinuz-")?;
            if !version.ends_with("-amd64") || !has_sch_netem(version) {
                return None;
            }
            Some((version_key(version), e.path()))
        })
        .collect();
    found.sort();
    found
}

/// The kernel release the installed `linux-image-amd64` depends on, from dpkg's status file
/// (`Depends: linux-image-6.1.0-48-amd64 (= 6.1.172-1)` -> `6.1.0-48-amd64`).
fn stock_release(status: &str) -> Option<String> {
    status
        .split("\n\n")
        .find(|para| {
            para.lines().any(|l| l == "Package: linux-image-amd64")
                && para.lines().any(|l| l == "Status: install ok installed")
        })?
        .lines()
        .find_map(|l| l.strip_prefix("Depends: "))?
        .split(',')
        .map(|d| d.split_whitespace().next().unwrap_or(""))
        .find_map(|d| d.strip_prefix("linux-image-"))
        .map(str::to_owned)
}

/// The release of a kernel image path (`/boot/vmlinuz-6.1.0-48-amd64` -> `6.1.0-48-amd64`).
pub fn release(image: &Path) -> Option<&str> {
    image.file_name()?.to_str()?.strip_prefix("vmlinuz-")
}

/// Numeric parts of a kernel version, for ordering (`6.1.0-56-amd64` -> [6, 1, 0, 56, 64]).
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn has_sch_netem(version: &str) -> bool {
    let dir = Path::new(MODULES).join(version);
    let sched = dir.join("kernel/net/sched");
    let named = |p: &Path| {
        fs::read_dir(p).ok().is_some_and(|entries| {
            entries
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_string_lossy().starts_with("sch_netem.ko"))
        })
    };
    // modules.dep lists every module, wherever a distribution puts it.
    named(&sched)
        || fs::read_to_string(dir.join("modules.dep"))
            .is_ok_and(|dep| dep.lines().any(|l| l.contains("/sch_netem.ko")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_numerically() {
        let mut v = [
            version_key("6.1.0-9-amd64"),
            version_key("6.12.0-1-amd64"),
            version_key("6.1.0-56-amd64"),
        ];
        v.sort();
        assert_eq!(v[2], vec![6, 12, 0, 1, 64]);
        assert_eq!(v[1], vec![6, 1, 0, 56, 64]);
    }

    #[test]
    fn the_stock_release_is_what_linux_image_amd64_depends_on() {
        let status = "Package: linux-image-6.12.95+deb12-amd64\nStatus: install ok installed\n\
                      Version: 6.12.95-1~bpo12+1\n\n\
                      Package: linux-image-amd64\nStatus: install ok installed\n\
                      Source: linux-signed-amd64 (6.1.172+1)\nVersion: 6.1.172-1\n\
                      Depends: linux-image-6.1.0-48-amd64 (= 6.1.172-1)\n\n\
                      Package: zlib1g\nStatus: install ok installed\n";
        assert_eq!(stock_release(status).as_deref(), Some("6.1.0-48-amd64"));
        // Removed (config files left) is not installed.
        let removed = "Package: linux-image-amd64\nStatus: deinstall ok config-files\n\
                       Depends: linux-image-6.1.0-48-amd64 (= 6.1.172-1)\n";
        assert_eq!(stock_release(removed), None);
        assert_eq!(stock_release(""), None);
    }

    #[test]
    fn release_is_the_image_name_after_vmlinuz() {
        assert_eq!(
            release(Path::new("/boot/vmlinuz-6.1.0-48-amd64")),
            Some("6.1.0-48-amd64")
        );
        assert_eq!(release(Path::new("/boot/initrd.img-6.1.0-48-amd64")), None);
    }
}
