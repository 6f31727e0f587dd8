//! An incremental `text/event-stream` parser: feed it bytes as they arrive, get event data out.

use std::time::Duration;

/// Incremental SSE parser. `data:` carries MCP's messages; `id:` and `retry:` are kept for
/// resuming a stream the server closed (the last event id, the reconnection delay); `event:`
/// and comments are ignored. Lines may end in `\n`, `\r\n` or `\r`, and may be split across
/// chunks.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    buf: Vec<u8>,
    data: String,
    has_data: bool,
    started: bool,
    /// The id of the event being read (the spec's "last event ID buffer"); it becomes
    /// `last_event_id` only when its event is dispatched by a blank line.
    id_buffer: Option<String>,
    last_event_id: Option<String>,
    retry: Option<Duration>,
}

impl SseParser {
    /// Feed a chunk; returns the data of every event completed by it.
    pub(crate) fn feed(&mut self, chunk: &[u8]) -> Vec<String> {
        self.buf.extend_from_slice(chunk);
        let mut events = Vec::new();
        while let Some(pos) = self.buf.iter().position(|b| *b == b'\n' || *b == b'\r') {
            let len = if self.buf[pos] == b'\r' {
                match self.buf.get(pos + 1) {
                    Some(b'\n') => 2,
                    Some(_) => 1,
                    // A lone `\r` at the end of the buffer: wait to see whether `\n` follows.
                    None => break,
                }
            } else {
                1
            };
            let line: Vec<u8> = self.buf.drain(..pos + len).take(pos).collect();
            self.line(&line, &mut events);
        }
        events
    }

    /// A parser for a resumed stream: the last event id and the reconnection delay carry over
    /// from the stream it resumes (as an `EventSource` keeps them across reconnections), so a
    /// resumed stream that brings no id of its own can be resumed again from the same point.
    pub(crate) fn resuming(last_event_id: Option<String>, retry: Option<Duration>) -> Self {
        Self {
            id_buffer: last_event_id.clone(),
            last_event_id,
            retry,
            ..Self::default()
        }
    }

    /// The stream ended. An event not yet ended by its blank line is discarded, id and all, as
    /// the SSE spec says ("if the file ends in the middle of an event, before the final empty
    /// line, the incomplete event is not dispatched"): a stream cut mid-event may have cut its
    /// data too. A `\r` held back to see whether `\n` followed did end its line.
    pub(crate) fn finish(&mut self) -> Vec<String> {
        let mut events = Vec::new();
        if self.buf.last() == Some(&b'\r') {
            let mut line = std::mem::take(&mut self.buf);
            line.pop();
            self.line(&line, &mut events);
        }
        self.buf.clear();
        self.data.clear();
        self.has_data = false;
        events
    }

    /// The id of the last event that carried one.
    pub(crate) fn last_event_id(&self) -> Option<&str> {
        self.last_event_id.as_deref()
    }

    /// The reconnection delay the server asked for.
    pub(crate) fn retry(&self) -> Option<Duration> {
        self.retry
    }

    fn line(&mut self, line: &[u8], events: &mut Vec<String>) {
        let mut line = line;
        if !self.started {
            self.started = true;
            line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        }
        if line.is_empty() {
            // Dispatch: the event's id becomes the stream's last event id (even for an event
            // without data, as the spec does).
            self.last_event_id.clone_from(&self.id_buffer);
            if self.has_data {
                let mut data = std::mem::take(&mut self.data);
                if data.ends_with('\n') {
                    data.pop();
                }
                events.push(data);
                self.has_data = false;
            }
            return;
        }
        if line.first() == Some(&b':') {
            return; // comment / keep-alive
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                self.data.push_str(&String::from_utf8_lossy(value));
                self.data.push('\n');
                self.has_data = true;
            }
            // The spec ignores an id holding NUL; an empty one resets it.
            b"id" if !value.contains(&0) => {
                self.id_buffer =
                    (!value.is_empty()).then(|| String::from_utf8_lossy(value).into_owned());
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                if let Ok(ms) = std::str::from_utf8(value).unwrap_or("").parse::<u64>() {
                    self.retry = Some(Duration::from_millis(ms));
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::SseParser;
    use std::time::Duration;

    fn all(chunks: &[&[u8]]) -> Vec<String> {
        let mut p = SseParser::default();
        let mut out = Vec::new();
        for c in chunks {
            out.extend(p.feed(c));
        }
        out.extend(p.finish());
        out
    }

    #[test]
    fn single_event() {
        assert_eq!(
            all(&[b"event: message\ndata: {\"a\":1}\n\n"]),
            ["{\"a\":1}"]
        );
    }

    #[test]
    fn multi_line_data_is_joined_with_newline() {
        assert_eq!(all(&[b"data: a\ndata: b\ndata:c\n\n"]), ["a\nb\nc"]);
    }

    #[test]
    fn comments_and_other_fields_are_ignored() {
        let s = b": keep-alive\nid: 7\nretry: 100\nevent: x\ndata: d\n\n:\n\n";
        assert_eq!(all(&[s]), ["d"]);
    }

    #[test]
    fn crlf_and_cr_line_endings() {
        assert_eq!(
            all(&[b"data: a\r\n\r\ndata: b\r\rdata: c\r\n\r\n"]),
            ["a", "b", "c"]
        );
    }

    #[test]
    fn split_across_chunks_anywhere() {
        let s: &[u8] = b"event: message\r\ndata: {\"id\":1}\r\ndata: x\r\n\r\ndata: y\n\n";
        for cut in 0..s.len() {
            let (a, b) = s.split_at(cut);
            assert_eq!(all(&[a, b]), ["{\"id\":1}\nx", "y"], "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = s.chunks(1).collect();
        assert_eq!(all(&bytes), ["{\"id\":1}\nx", "y"]);
    }

    /// An event the stream ended inside, before its blank line, is discarded, and so is its
    /// id: resuming from it would skip the event. A final `\r` does end its line.
    #[test]
    fn no_data_no_event_and_unterminated_last_event() {
        assert_eq!(
            all(&[b"event: x\n\n: c\n\ndata: tail"]),
            Vec::<String>::new()
        );
        assert_eq!(all(&[b"data: a\n\ndata: {\"cut\":\n"]), ["a"]);
        let mut p = SseParser::default();
        assert_eq!(p.feed(b"id: e-1\ndata: a\n\nid: e-2\ndata: b\n"), ["a"]);
        assert!(p.finish().is_empty());
        assert_eq!(
            p.last_event_id(),
            Some("e-1"),
            "the cut event's id is not kept"
        );
        assert_eq!(all(&[b"data: x\r\r"]), ["x"]);
        assert_eq!(all(&[b"data: x\r", b"\r"]), ["x"]);
    }

    /// A resumed stream without ids of its own still resumes from where the first one left.
    #[test]
    fn resuming_keeps_the_last_id_and_retry() {
        let mut p = SseParser::resuming(Some("e-7".into()), Some(Duration::from_millis(250)));
        assert_eq!(p.feed(b": keep-alive\ndata: x\n\n"), ["x"]);
        assert_eq!(p.last_event_id(), Some("e-7"));
        assert_eq!(p.retry(), Some(Duration::from_millis(250)));
        p.feed(b"id: e-8\nretry: 100\n\n");
        assert_eq!(p.last_event_id(), Some("e-8"));
        assert_eq!(p.retry(), Some(Duration::from_millis(100)));
    }

    #[test]
    fn empty_data_gives_empty_event() {
        assert_eq!(all(&[b"id: 1\ndata:\n\n"]), [""]);
    }

    #[test]
    fn event_id_and_retry_are_kept_for_resuming() {
        let mut p = SseParser::default();
        assert!(p.feed(b"id: event-1\nretry: 500\ndata: \n\n").len() == 1);
        assert_eq!(p.last_event_id(), Some("event-1"));
        assert_eq!(p.retry(), Some(Duration::from_millis(500)));
        p.feed(b"retry: soon\nid: a\0b\n\n");
        assert_eq!(p.retry(), Some(Duration::from_millis(500)), "not digits");
        assert_eq!(
            p.last_event_id(),
            Some("event-1"),
            "an id with NUL is ignored"
        );
        p.feed(b"id\n\n");
        assert_eq!(p.last_event_id(), None, "an empty id resets it");
    }
}
