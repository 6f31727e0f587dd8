//! The guest kernel the lab's VMs boot where Nix does not build one: the newest Debian
//! `/boot/vmlinuz-*-amd64` whose modules include `sch_netem` (the guests apply netem when the
//! host cannot). Used by the qemu backend and by the test kit's throw-away guests.

use std::fs;
use std::path::{Path, PathBuf};

/// Where Debian installs kernels.
pub const BOOT: &str = "/boot";
/// Where a kernel's modules live, by release.
pub const MODULES: &str = "/lib/modules";

/// The newest `/boot/vmlinuz-*-amd64` whose modules include `sch_netem`.
pub fn find() -> Option<PathBuf> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = fs::read_dir(BOOT)
        .ok()?
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
    found.pop().map(|(_, p)| p)
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
    fn release_is_the_image_name_after_vmlinuz() {
        assert_eq!(
            release(Path::new("/boot/vmlinuz-6.1.0-48-amd64")),
            Some("6.1.0-48-amd64")
        );
        assert_eq!(release(Path::new("/boot/initrd.img-6.1.0-48-amd64")), None);
    }
}
