//! The guest kernel the lab's VMs boot where Nix does not build one: the newest Debian
//! `/boot/vmlinuz-*-amd64` whose modules include `sch_netem` (the guests apply netem when the
//! host cannot), else the newest such kernel in a tools directory's `kernels/` ([`KERNELS`]).
//! Used by the qemu backend and by the test kit's throw-away guests.
//!
//! `scripts/install-deps vm` extracts bookworm-backports' kernel (6.12) into
//! `$SSHLAB_TOOLS/kernels/`, without installing it (no package, no boot-loader hook), for the
//! check that netem's seed is kept on a kernel of 6.6 or later ([`find_at_least`]); virtme-ng
//! finds its modules beside its image (`kernels/lib/modules/<release>`). The guests keep the
//! machine's own kernel: their runs with the extracted one (virtme-ng then packs the modules
//! into its initramfs) twice had a guest exit at once without a word, right after another
//! lab's teardown.

use std::fs;
use std::path::{Path, PathBuf};

/// Where Debian installs kernels.
pub const BOOT: &str = "/boot";
/// Where a kernel's modules live, by release.
pub const MODULES: &str = "/lib/modules";
/// The folder of a tools directory (`$SSHLAB_TOOLS`, `/opt/sshlab-tools`,
/// `~/.cache/sshlab-tools`) that holds extracted kernels: `boot/vmlinuz-<release>` and
/// `lib/modules/<release>`, as the package lays them out.
pub const KERNELS: &str = "kernels";

/// The newest `/boot/vmlinuz-*-amd64` with `sch_netem`, else the newest in a tools
/// directory's [`KERNELS`].
pub fn find() -> Option<PathBuf> {
    let all = candidates();
    let boot = all
        .iter()
        .rev()
        .find(|(_, p)| p.starts_with(BOOT))
        .map(|(_, p)| p.clone());
    boot.or_else(|| all.last().map(|(_, p)| p.clone()))
}

/// The newest kernel with `sch_netem`, in `/boot` or a tools directory, of version
/// `major.minor` or later (netem's seed needs 6.6).
pub fn find_at_least(major: u64, minor: u64) -> Option<PathBuf> {
    candidates()
        .into_iter()
        .rev()
        .find(|(key, _)| key.as_slice() >= [major, minor].as_slice())
        .map(|(_, p)| p)
}

/// The roots kernels are looked for in: `/` (its `boot/` and `lib/modules/`), then each tools
/// directory's [`KERNELS`].
fn roots() -> Vec<PathBuf> {
    let mut roots = vec![PathBuf::from("/")];
    let tools = [
        std::env::var_os("SSHLAB_TOOLS").map(PathBuf::from),
        Some(PathBuf::from("/opt/sshlab-tools")),
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/sshlab-tools")),
    ];
    for t in tools.into_iter().flatten() {
        let k = t.join(KERNELS);
        if !roots.contains(&k) {
            roots.push(k);
        }
    }
    roots
}

/// Every `vmlinuz-*-amd64` under the [`roots`] whose modules include `sch_netem`, oldest first.
fn candidates() -> Vec<(Vec<u64>, PathBuf)> {
    let mut found: Vec<(Vec<u64>, PathBuf)> = roots()
        .iter()
        .flat_map(|root| {
            let Ok(dir) = fs::read_dir(root.join("boot")) else {
                return Vec::new();
            };
            dir.filter_map(Result::ok)
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    let version = name.strip_prefix("vmlinuz-")?;
                    if !version.ends_with("-amd64") || !has_sch_netem(root, version) {
                        return None;
                    }
                    Some((version_key(version), e.path()))
                })
                .collect()
        })
        .collect();
    found.sort();
    found
}

/// The release of a kernel image path (`/boot/vmlinuz-6.1.0-48-amd64` -> `6.1.0-48-amd64`).
pub fn release(image: &Path) -> Option<&str> {
    image.file_name()?.to_str()?.strip_prefix("vmlinuz-")
}

/// Where the modules of the kernel image `image` are: `lib/modules/<release>` of the root
/// its `boot/` is in (`/boot/vmlinuz-6.1.0-48-amd64` -> `/lib/modules/6.1.0-48-amd64`), as
/// virtme-ng looks for them.
pub fn modules_dir(image: &Path) -> Option<PathBuf> {
    let root = image.parent()?.parent()?;
    Some(root.join("lib/modules").join(release(image)?))
}

/// Numeric parts of a kernel version, for ordering (`6.1.0-56-amd64` -> [6, 1, 0, 56, 64]).
fn version_key(version: &str) -> Vec<u64> {
    version
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .filter_map(|s| s.parse().ok())
        .collect()
}

fn has_sch_netem(root: &Path, version: &str) -> bool {
    let dir = root.join("lib/modules").join(version);
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
        assert_eq!(
            modules_dir(Path::new("/boot/vmlinuz-6.1.0-48-amd64")),
            Some(PathBuf::from("/lib/modules/6.1.0-48-amd64"))
        );
        assert_eq!(
            modules_dir(Path::new(
                "/opt/sshlab-tools/kernels/boot/vmlinuz-6.12.95+deb12-amd64"
            )),
            Some(PathBuf::from(
                "/opt/sshlab-tools/kernels/lib/modules/6.12.95+deb12-amd64"
            ))
        );
    }
}
