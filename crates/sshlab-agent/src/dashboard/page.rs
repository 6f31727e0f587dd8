//! The dashboard page: `report.html` as the report's code draws it ([`html::document`] in its
//! live view), with a status bar above it (status, elapsed and remaining time, phase, the stop
//! button) and a small inline script that keeps it current. Nothing is fetched from anywhere
//! but the agent: no CDN, no font, no image; the Content-Security-Policy the server sends
//! forbids the browser to try.
//!
//! The script listens to `/events`: each `frame` event replaces the bar's fields and the
//! `<main>` element's content with HTML the agent rendered; the `report` event replaces the
//! whole document with the text of `report.html`, so the page at the end is the report; the
//! `failed` event says why the run could not run. A dropped connection is retried by the
//! browser (EventSource), and the first event after it is the current frame.

use serde::Serialize;
use sshlab_core::report::escape::escape;
use sshlab_core::report::html::{self, View};
use sshlab_core::results::Summary;

use super::live::{Frame, Status};

/// The header the stop button sends: a page on another origin cannot send it without the
/// agent's consent (a CORS preflight the agent never grants), so it cannot stop a run.
pub const STOP_HEADER: &str = "x-sshlab-dashboard";

/// What the browser may load: this page's inline style and script, and its own origin's
/// event stream; nothing else, from anywhere.
pub const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

const BAR_CSS: &str = r#"<style>
#live{position:sticky;top:0;z-index:1;display:flex;gap:18px;align-items:center;flex-wrap:wrap;background:#1d2330;color:#fff;padding:10px 24px;font-size:14px;font-variant-numeric:tabular-nums}
#live .st{font-weight:700;letter-spacing:.04em;padding:2px 10px;border-radius:999px;background:#6b7385}
#live .st.running{background:#2f9e44}#live .st.stopping{background:#f08c00}#live .st.failed{background:#e03131}
#live .dim{color:#aab2c5}
#live button{margin-left:auto;background:#e03131;color:#fff;border:0;border-radius:6px;padding:6px 14px;font-weight:600;cursor:pointer}
#live button:disabled{background:#6b7385;cursor:default}
#live #msg{color:#ffd8a8}
</style>"#;

const SCRIPT: &str = r#"<script>
(function () {
  var $ = function (id) { return document.getElementById(id); };
  var main = document.querySelector('main');
  function clock(s) {
    s = Math.max(0, Math.round(s));
    var m = Math.floor(s / 60), r = s % 60;
    return m + ':' + (r < 10 ? '0' : '') + r;
  }
  var es = new EventSource('/events');
  es.onopen = function () { $('conn').textContent = ''; };
  es.onerror = function () { $('conn').textContent = 'connection lost: retrying'; };
  es.addEventListener('frame', function (e) {
    var f = JSON.parse(e.data);
    $('status').textContent = f.status.toUpperCase();
    $('status').className = 'st ' + f.status;
    $('elapsed').textContent = clock(f.elapsed_s);
    $('remaining').textContent = clock(f.remaining_s);
    $('phase').textContent = f.phase || '-';
    if (f.html !== null) { main.innerHTML = f.html; }
    $('stop').disabled = f.status !== 'running';
    document.body.setAttribute('data-seq', f.seq);
  });
  es.addEventListener('report', function (e) {
    es.close();
    var r = JSON.parse(e.data);
    document.open();
    document.write(r.html);
    document.close();
  });
  es.addEventListener('failed', function (e) {
    es.close();
    var r = JSON.parse(e.data);
    $('status').textContent = 'FAILED';
    $('status').className = 'st failed';
    $('stop').disabled = true;
    $('msg').textContent = r.error;
  });
  $('stop').addEventListener('click', function () {
    $('stop').disabled = true;
    fetch('/stop', { method: 'POST', headers: { 'x-sshlab-dashboard': 'stop' } })
      .then(function (r) { return r.json(); })
      .then(function (j) { $('msg').textContent = j.error || 'stopping: partial results are being written'; })
      .catch(function (err) { $('msg').textContent = 'stop failed: ' + err; });
  });
})();
</script>"#;

/// The status bar, as it reads for `f` before the script takes over.
fn bar(f: &Frame) -> String {
    let status = serde_json::to_value(f.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let disabled = if f.status == Status::Running {
        ""
    } else {
        " disabled"
    };
    format!(
        r#"<div id="live"><span id="status" class="st {status}">{}</span><span><span class="dim">elapsed</span> <span id="elapsed">{}</span></span><span><span class="dim">remaining</span> <span id="remaining">{}</span></span><span><span class="dim">phase</span> <span id="phase">{}</span></span><span id="conn" class="dim"></span><span id="msg">{}</span><button id="stop" type="button"{disabled}>Stop the run</button></div>"#,
        status.to_uppercase(),
        clock(f.elapsed_s),
        clock(f.remaining_s),
        escape(f.phase.as_deref().unwrap_or("-")),
        escape(f.error.as_deref().unwrap_or("")),
    )
}

fn clock(s: f64) -> String {
    let s = if s.is_finite() {
        s.max(0.0).round()
    } else {
        0.0
    } as u64;
    format!("{}:{:02}", s / 60, s % 60)
}

/// The page for frame `f`: the live report of `summary` (the frame's, or a placeholder until
/// the first one has one) under the status bar.
pub fn page(f: &Frame, summary: &Summary) -> String {
    html::document(summary, View::Live, BAR_CSS, &bar(f), SCRIPT)
}

/// A `frame` event's data.
#[derive(Debug, Serialize)]
struct FrameEvent<'a> {
    seq: u64,
    status: Status,
    elapsed_s: f64,
    remaining_s: f64,
    phase: Option<&'a str>,
    /// The new content of `<main>`; `null`: keep it (no summary in this frame).
    html: Option<&'a str>,
}

/// The data of the `frame` event for `f` (JSON, one line).
pub fn frame_data(f: &Frame) -> String {
    let html = f.main_html();
    let ev = FrameEvent {
        seq: f.seq,
        status: f.status,
        elapsed_s: finite(f.elapsed_s),
        remaining_s: finite(f.remaining_s),
        phase: f.phase.as_deref(),
        html: html.as_deref(),
    };
    // Plain data with finite numbers: serialising cannot fail.
    serde_json::to_string(&ev).unwrap_or_default()
}

fn finite(x: f64) -> f64 {
    if x.is_finite() { x } else { 0.0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_is_the_live_report_with_a_bar_and_nothing_from_outside() {
        let live = super::super::live::Live::new();
        let f = live.frame();
        let p = page(&f, &live.placeholder());
        assert!(p.starts_with("<!DOCTYPE html>"));
        assert!(p.contains(r#"id="stop""#) && p.contains("new EventSource('/events')"));
        assert!(p.contains("Per operation") || p.contains("<main>"));
        for external in ["src=", "href=", "@import", "url(", "http://", "https://"] {
            assert!(!p.contains(external), "external reference {external:?}");
        }
        // The page's own markup is escaped like the report's.
        let mut s = live.placeholder();
        s.run.scenario = "<b>x</b>".into();
        assert!(!page(&f, &s).contains("<b>x</b>"));
        assert_eq!(clock(61.4), "1:01");
        assert_eq!(clock(f64::NAN), "0:00");
    }
}
