//! `sshlab-agent`: the load agent of the sshlab lab. This library owns the agent's MCP client
//! ([`mcp`]): a spec-driven Streamable-HTTP client that speaks both protocol eras (2026-07-28
//! stateless, and the 2025 `initialize` handshake). Scenarios, measurement and the CLI will build
//! on it; the binary is still a skeleton.

pub mod mcp;
