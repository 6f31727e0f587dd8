//! What the agent's integration tests share.

/// The real mcp-ssh-server, in process on a loopback port, in the `loadtest` profile with
/// rate limits off (the agent is the load) unless `extra` sets them, plus `extra` flags.
pub async fn loadtest_server(extra: &[&str]) -> mcp_ssh_server::Running {
    use clap::Parser;
    let mut args = vec![
        "mcp-ssh-server",
        "--bind",
        "127.0.0.1:0",
        "--profile",
        "loadtest",
    ];
    for flag in ["--rate-limit-per-min", "--global-rate-limit-per-min"] {
        if !extra.contains(&flag) {
            args.extend([flag, "0"]);
        }
    }
    args.extend_from_slice(extra);
    let opts = mcp_ssh_server::Opts::parse_from(args);
    let config = mcp_ssh_server::Config::resolve(&opts).expect("config");
    mcp_ssh_server::start(config).await.expect("server")
}
