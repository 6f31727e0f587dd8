//! `mcp-ssh-server` binary: parse flags, set up logging, run the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let opts = mcp_ssh_server::Opts::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
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
