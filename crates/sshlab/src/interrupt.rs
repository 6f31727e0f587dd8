//! Ctrl-C and SIGTERM as a request, not a death: the handler only records it, and the long
//! waits (`vm up`'s readiness, `run`'s job) check [`requested`] and then undo or cancel what
//! they started. Without this, `sshlab` would die and leave its VMs (own process groups, so
//! the terminal's SIGINT never reaches them) running.

use std::sync::atomic::{AtomicBool, Ordering};

static REQUESTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Routes SIGINT and SIGTERM to the flag (idempotent). One-shot (`SA_RESETHAND`): a second
/// Ctrl-C gets the default action, so a user can always kill a stuck `sshlab`.
pub fn install() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe; the sigaction
    // struct is zeroed and then filled as sigaction(2) documents.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
        action.sa_flags = libc::SA_RESETHAND;
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(libc::SIGINT, &action, std::ptr::null_mut());
        libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut());
    }
}

/// Whether SIGINT or SIGTERM arrived since [`install`].
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}
