//! Reports rendered from a [`Summary`](crate::results::Summary): plain text in the load-testing
//! guide's layout. Rendering reads only the summary, so `sshlab report` and the agent produce
//! the same text from the same run.

pub mod format;
pub mod html;
pub mod junit;
pub mod text;
