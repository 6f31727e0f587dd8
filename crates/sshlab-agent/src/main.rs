//! `sshlab-agent` binary: parse flags, set up logging, run the library's command line.

use clap::Parser;

/// mimalloc instead of glibc malloc: the agent allocates per request on every worker thread,
/// and in profiles glibc's malloc/free took ~17% of the agent's CPU; mimalloc's per-thread
/// heaps are faster. Built with `no_thp` (Cargo.toml): otherwise mimalloc asks the kernel for
/// transparent huge pages, and at 1,000 workers that alone took the RSS from 58 to 84 MiB.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = sshlab_agent::cli::Cli::parse();
    let default = if cli.verbose { "debug" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .init();
    match tokio::runtime::Runtime::new() {
        Ok(rt) => rt.block_on(sshlab_agent::cli::main(cli)),
        Err(e) => {
            eprintln!("sshlab-agent: cannot start the async runtime: {e}");
            std::process::ExitCode::from(sshlab_agent::cli::EXIT_RUN_ERROR)
        }
    }
}
