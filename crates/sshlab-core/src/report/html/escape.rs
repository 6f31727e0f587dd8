//! HTML escaping. Every string that reaches the page from the summary (scenario, test id, URL,
//! operation and port names, error kinds, threshold expressions, reasons) passes through
//! [`escape`] on its way out, in text and in attribute values alike, so one function with one
//! rule set is all the page needs.

/// Escape `s` for HTML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_the_five_special_characters_and_nothing_else() {
        assert_eq!(
            escape(r#"<a href="x">Tom & Jerry's</a>"#),
            "&lt;a href=&quot;x&quot;&gt;Tom &amp; Jerry&#39;s&lt;/a&gt;"
        );
        assert_eq!(
            escape("p99 < 200 ms · ünïcode"),
            "p99 &lt; 200 ms · ünïcode"
        );
        assert_eq!(escape(""), "");
    }
}
