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
    match runtime.block_on(mcp_ssh_server::run(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp-ssh-server: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
