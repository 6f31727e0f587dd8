//! What the server actually said when an operation failed: the distinct error messages of a
//! run, each with its count, when it first happened, and one example, verbatim.
//!
//! An error kind (`jsonrpc`, `tool_error`) says which layer failed; the message says why
//! (`pool exhausted for testuser@10.178.0.20:2222 (20/20)`). Messages are grouped by a shape
//! in which numbers and ids are blanked, so the same failure on another port, session or
//! address counts once. The catalog is bounded: past [`MAX_DISTINCT`] shapes, further
//! failures are counted in [`ErrorMessages::unlisted`] only, so a server that puts a fresh id
//! in every message cannot grow the agent's memory.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

/// Distinct message shapes kept per run.
pub const MAX_DISTINCT: usize = 64;
/// Longest message kept (bytes, cut at a character boundary); records carry the same cut.
pub const MAX_MESSAGE: usize = 300;

/// One distinct failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// The error kind (`jsonrpc`, `tool_error`, `timeout`, ...).
    pub kind: String,
    /// The first message of this shape, verbatim (cut at [`MAX_MESSAGE`] bytes).
    pub example: String,
    /// Failures of this shape.
    pub count: u64,
    /// Seconds from the run's start to the first of them.
    pub first_s: f64,
    /// Seconds from the run's start to the last of them.
    #[serde(default)]
    pub last_s: f64,
    /// The operation that first failed so.
    pub op: String,
}

/// The bounded catalog of a run's error messages.
#[derive(Debug, Clone, Default)]
pub struct ErrorMessages {
    by_shape: HashMap<(String, String), ErrorMessage>,
    /// Failures whose shape did not fit in the catalog.
    pub unlisted: u64,
}

impl ErrorMessages {
    /// Count one failure of `kind` with `message`, from operation `op`, `t` seconds into the run.
    pub fn add(&mut self, kind: &str, message: &str, op: &str, t: f64) {
        let key = (kind.to_owned(), shape(message));
        if let Some(m) = self.by_shape.get_mut(&key) {
            m.count += 1;
            m.first_s = m.first_s.min(t);
            m.last_s = m.last_s.max(t);
            return;
        }
        if self.by_shape.len() >= MAX_DISTINCT {
            self.unlisted += 1;
            return;
        }
        self.by_shape.insert(
            key,
            ErrorMessage {
                kind: kind.to_owned(),
                example: cut(message).to_owned(),
                count: 1,
                first_s: t,
                last_s: t,
                op: op.to_owned(),
            },
        );
    }

    /// Add another catalog's counts (same bounds).
    pub fn merge(&mut self, o: &ErrorMessages) {
        self.unlisted += o.unlisted;
        for (key, m) in &o.by_shape {
            if let Some(mine) = self.by_shape.get_mut(key) {
                mine.count += m.count;
                mine.last_s = mine.last_s.max(m.last_s);
                if m.first_s < mine.first_s {
                    mine.first_s = m.first_s;
                    mine.example.clone_from(&m.example);
                    mine.op.clone_from(&m.op);
                }
            } else if self.by_shape.len() < MAX_DISTINCT {
                self.by_shape.insert(key.clone(), m.clone());
            } else {
                self.unlisted += m.count;
            }
        }
    }

    /// The messages, most frequent first (ties: earliest first).
    pub fn sorted(&self) -> Vec<ErrorMessage> {
        let mut v: Vec<ErrorMessage> = self.by_shape.values().cloned().collect();
        v.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.first_s.total_cmp(&b.first_s))
                .then_with(|| a.example.cmp(&b.example))
        });
        v
    }
}

/// `message` cut to at most [`MAX_MESSAGE`] bytes at a character boundary.
pub fn cut(message: &str) -> &str {
    let mut end = message.len().min(MAX_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// The message with every number and id-like token (a run of letters, digits, `_` and `-`
/// that holds a digit: `20`, `3fa85f64-5717-…`, `ssh_6GmA7Za5YZoxtE_unkaY2Q`) replaced by `#`,
/// so that failures differing only in a port, count, session or address group together.
pub fn shape(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE));
    let mut token = String::new();
    let flush = |token: &mut String, out: &mut String| {
        if token.bytes().any(|b| b.is_ascii_digit()) {
            out.push('#');
        } else {
            out.push_str(token);
        }
        token.clear();
    };
    for c in cut(message).chars() {
        if c.is_ascii_alphanumeric() || c == '_' || (c == '-' && !token.is_empty()) {
            token.push(c);
        } else {
            flush(&mut token, &mut out);
            out.push(c);
        }
    }
    flush(&mut token, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_ids_are_blanked_words_are_kept() {
        assert_eq!(
            shape("pool exhausted for testuser@10.178.0.20:2222 (20/20)"),
            "pool exhausted for testuser@#.#.#.#:# (#/#)"
        );
        assert_eq!(
            shape("unknown session 3fa85f64-5717-4562-b3fc-2c963f66afa6"),
            "unknown session #"
        );
        // Hex letters alone are a word ("bad", "face"), not an id.
        assert_eq!(shape("a bad face"), "a bad face");
        // The server's session handles (base64url) are ids too.
        assert_eq!(
            shape("session not found: ssh_6GmA7Za5YZoxtE_unkaY2Q"),
            shape("session not found: ssh_dAj330jbJXB1-3zfs3zGKA")
        );
        assert_eq!(
            shape("connection to h:22 lost: the SSH server"),
            "connection to h:# lost: the SSH server"
        );
    }

    #[test]
    fn the_same_failure_elsewhere_counts_once_with_its_first_example() {
        let mut m = ErrorMessages::default();
        m.add(
            "tool_error",
            "pool exhausted for u@h:2322 (20/20)",
            "ssh_connect",
            3.0,
        );
        m.add(
            "tool_error",
            "pool exhausted for u@h:2323 (20/20)",
            "ssh_connect",
            1.5,
        );
        m.add("jsonrpc", "Method not found: x", "x", 2.0);
        let v = m.sorted();
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].count, 2);
        assert_eq!(v[0].example, "pool exhausted for u@h:2322 (20/20)");
        assert_eq!(v[0].first_s, 1.5);
        assert_eq!(v[1].kind, "jsonrpc");
    }

    /// A million distinct messages keep the catalog at its bound; the rest are counted.
    #[test]
    fn memory_stays_bounded_under_distinct_messages() {
        let mut m = ErrorMessages::default();
        for i in 0..1_000_000u64 {
            // Letters outside hex make every shape distinct.
            let word: String = format!("{i:x}")
                .chars()
                .map(|c| char::from(b'g' + (c.to_digit(16).unwrap_or(0) as u8)))
                .collect();
            m.add("jsonrpc", &format!("error {word}"), "op", 0.0);
        }
        assert_eq!(m.sorted().len(), MAX_DISTINCT);
        assert_eq!(m.unlisted, 1_000_000 - MAX_DISTINCT as u64);
        let long = "é".repeat(1000);
        m = ErrorMessages::default();
        m.add("k", &long, "op", 0.0);
        assert!(m.sorted()[0].example.len() <= MAX_MESSAGE);
    }
}
