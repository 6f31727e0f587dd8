//! Reports rendered from a [`Summary`](crate::results::Summary): plain text in the load-testing
//! guide's layout ([`text`]), a self-contained HTML page ([`html`]) and JUnit XML for CI
//! ([`junit`]). Rendering reads only the summary, so `sshlab report` and the agent produce
//! the same reports from the same run.

pub mod escape;
pub mod format;
pub mod html;
pub mod junit;
pub mod text;
