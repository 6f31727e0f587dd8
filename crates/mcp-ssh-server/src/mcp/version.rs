//! Protocol revisions this server speaks, and how a 2025-era `initialize` is negotiated.

/// The stateless revision: version, capabilities and identity travel with every request.
pub const MODERN: &[&str] = &["2026-07-28"];
/// Handshake revisions: `initialize`, then an `Mcp-Session-Id`. Newest first.
pub const LEGACY: &[&str] = &["2025-11-25", "2025-06-18", "2025-03-26"];
/// What a 2025-era request without an `MCP-Protocol-Version` header is assumed to speak.
pub const LEGACY_DEFAULT: &str = "2025-03-26";

/// Every supported version, newest first (for `server/discover` and version errors).
pub fn all() -> Vec<&'static str> {
    MODERN.iter().chain(LEGACY).copied().collect()
}

/// The version to answer an `initialize` asking for `requested`: the same when supported,
/// otherwise the newest handshake revision (the spec's rule; the client decides whether it
/// can speak it).
pub fn negotiate(requested: Option<&str>) -> &'static str {
    requested
        .and_then(|r| LEGACY.iter().find(|v| **v == r))
        .copied()
        .unwrap_or(LEGACY[0])
}

/// Find a legacy version by name, with a static lifetime.
pub fn legacy(version: &str) -> Option<&'static str> {
    LEGACY.iter().find(|v| **v == version).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_keeps_supported_versions_and_offers_the_newest_otherwise() {
        assert_eq!(negotiate(Some("2025-06-18")), "2025-06-18");
        assert_eq!(negotiate(Some("2025-03-26")), "2025-03-26");
        assert_eq!(negotiate(Some("2024-11-05")), "2025-11-25");
        assert_eq!(
            negotiate(Some("2026-07-28")),
            "2025-11-25",
            "no handshake in 2026"
        );
        assert_eq!(negotiate(None), "2025-11-25");
    }
}
