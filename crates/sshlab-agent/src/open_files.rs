//! File descriptors. A run holds two per worker (its connection and its `w<N>.jsonl`), and
//! `report`/`merge` read every record file at once, so the common default soft limit of 1,024
//! stopped a 1,000-worker run midway with "Too many open files". The soft limit is raised to
//! the hard one (as the MCP server does; no privilege needed), and work that still would not
//! fit is refused before it starts, with the numbers and the fix.

use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// Descriptors kept for everything else (stdio, the results dir, the `.hlog`, `/metrics`
/// scrapes, the runtime's own).
const SPARE: u64 = 64;

/// Not enough descriptors, even at the hard limit.
#[derive(Debug, thiserror::Error)]
#[error(
    "not enough open files for {what}: about {need} needed, the limit is {limit} (hard limit \
     {hard}); raise it (`ulimit -n {need}`, or LimitNOFILE= in a systemd unit)"
)]
pub struct TooFew {
    /// What needs them.
    pub what: String,
    /// About how many it needs.
    pub need: u64,
    /// The soft limit in effect.
    pub limit: u64,
    /// The hard limit.
    pub hard: u64,
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit; returns `(soft, hard)` as in effect after.
/// `None` when the limits cannot be read (then nothing is checked).
pub fn raise() -> Option<(u64, u64)> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).ok()?;
    if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        return Some((hard, hard));
    }
    Some((soft, hard))
}

/// Raise the limit, then check that `files` descriptors (plus some spare) fit under it.
pub fn ensure(files: u64, what: impl FnOnce() -> String) -> Result<(), TooFew> {
    let Some((limit, hard)) = raise() else {
        return Ok(());
    };
    check(files, limit, hard, what)
}

fn check(files: u64, limit: u64, hard: u64, what: impl FnOnce() -> String) -> Result<(), TooFew> {
    let need = files.saturating_add(SPARE);
    if need <= limit {
        return Ok(());
    }
    Err(TooFew {
        what: what(),
        need,
        limit,
        hard,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_spare_is_counted_and_the_message_says_what_to_do() {
        assert!(check(960, 1024, 1024, || "x".into()).is_ok());
        let e = check(2000, 1024, 4096, || "--workers 1000".into()).expect_err("too few");
        assert_eq!(e.need, 2064);
        assert_eq!(
            e.to_string(),
            "not enough open files for --workers 1000: about 2064 needed, the limit is 1024 \
             (hard limit 4096); raise it (`ulimit -n 2064`, or LimitNOFILE= in a systemd unit)"
        );
    }
}
