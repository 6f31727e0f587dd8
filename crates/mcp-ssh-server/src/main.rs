//! `mcp-ssh-server` binary: parse flags, set up logging, run the library.

use clap::Parser;

/// Blocks of 64 KiB or more get their own mapping, given back to the system when freed
/// (glibc's `M_MMAP_THRESHOLD`; setting it also stops glibc from raising the threshold to the
/// largest block freed so far, up to 32 MiB). A large response is sent in 64 KiB pieces
/// (`http::ChargedBody`) and command output grows in large blocks, so the resident size follows
/// the output budget. Measured with a 32 MiB response stalled at three quarters: default
/// glibc, +69 MiB resident while the budget held 4 MiB, and 66 MiB kept after the response was
/// gone (fresh: 17 MiB); mimalloc, 83 MiB kept for over 10 s on an idle server (blocks freed
/// by another thread wait for their own thread to allocate again); this, +4 MiB for 4 MiB
/// held, and 18 MiB after. Returns whether glibc took it.
#[cfg(target_env = "gnu")]
fn return_large_blocks_to_the_system() -> bool {
    // SAFETY: mallopt only sets a parameter of glibc's allocator, and is called before the
    // runtime starts any other thread.
    unsafe { nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, 64 * 1024) == 1 }
}

fn main() -> std::process::ExitCode {
    let opts = mcp_ssh_server::Opts::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    #[cfg(target_env = "gnu")]
    if !return_large_blocks_to_the_system() {
        tracing::warn!("glibc refused M_MMAP_THRESHOLD: freed output may stay resident");
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mcp-ssh-server: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = runtime.block_on(mcp_ssh_server::run(opts));
    // A key still decoding on a blocking thread must not hold up the exit (dropping the runtime
    // would wait for it).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-ssh-server: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
