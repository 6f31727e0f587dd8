//! Markup escaping for the HTML page and the JUnit XML: every string that reaches them from the
//! summary (scenario, test id, URL, operation and port names, error kinds, threshold
//! expressions, reasons) passes through [`escape`] on its way out, in text and in attribute
//! values alike. One rule set serves both: the five special characters become references
//! valid in HTML and XML 1.0 alike (`&#39;`, not XML's `&apos;`, which HTML 4 lacks), and the
//! control characters XML 1.0 cannot carry (nor HTML display) are dropped.

/// Escape `s` for HTML or XML text and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            '\t' | '\n' | '\r' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn escapes_the_five_special_characters() {
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

    #[test]
    fn drops_what_xml_cannot_carry_and_keeps_whitespace() {
        assert_eq!(escape("a\u{0}b\u{1b}c\td'\r\n\u{FFFF}"), "abc\td&#39;\r\n");
    }
}
