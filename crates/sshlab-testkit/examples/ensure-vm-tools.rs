//! Installs what sshlab-testkit's `GuestVm` needs (Debian kernel, qemu, busybox, virtme-ng)
//! when missing; run by `scripts/test` before the tests. Root when anything is missing.

fn main() -> anyhow::Result<()> {
    sshlab_testkit::ensure_vm_tools()?;
    match sshlab_testkit::find_kernel() {
        Some(k) => println!("VM tools ready; guest kernel {}", k.display()),
        None => anyhow::bail!("VM tools installed but no guest kernel found"),
    }
    Ok(())
}
