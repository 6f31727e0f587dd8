//! The dashboard's HTTP endpoints:
//!
//! - `GET /`: the page (the live report with its bar), or, once the run has ended, its
//!   `report.html`;
//! - `GET /events`: server-sent events, a `frame` a second, then `report` (or `failed`); at
//!   most [`MAX_STREAMS`] at once, more get 503;
//! - `GET /metrics`: the agent's Prometheus metrics
//!   ([`sshlab_core::results::live_metrics`]);
//! - `POST /stop`: stops the run as Ctrl-C does (needs [`STOP_HEADER`], and a browser's
//!   `Origin`, when it sends one, must be the dashboard's own);
//! - `GET /report.html`: the last run's report, once there is one.
//!
//! Every answer says `Cache-Control: no-store` and carries the page's Content-Security-Policy.
//! Connections are capped by the listener ([`super::listener`]).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::stream::{self, Stream};
use serde_json::json;
use sshlab_core::dashboard::{EVENTS_PATH, METRICS_PATH, PAGE_PATH, REPORT_PATH, STOP_PATH};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use super::live::{Frame, Live, Status};
use super::page::{self, CSP, STOP_HEADER};

/// Event streams open at once; a page beyond them gets 503 (each costs a task and a socket,
/// and every frame is sent to each).
pub const MAX_STREAMS: usize = 16;

/// What the handlers share.
#[derive(Debug, Clone)]
pub(super) struct Shared {
    pub(super) live: Arc<Live>,
    pub(super) streams: Arc<Semaphore>,
}

fn no_store(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    r
}

fn html(body: String) -> Response {
    no_store(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response())
}

fn error(status: StatusCode, message: &str) -> Response {
    no_store((status, axum::Json(json!({ "error": message }))).into_response())
}

async fn index(State(d): State<Shared>) -> Response {
    let f = d.live.frame();
    if let Some(report) = &f.report {
        return html(report.to_string());
    }
    let placeholder;
    let summary = match &f.summary {
        Some(s) => s,
        None => {
            placeholder = d.live.placeholder();
            &placeholder
        }
    };
    html(page::page(&f, summary))
}

async fn report(State(d): State<Shared>) -> Response {
    match &d.live.frame().report {
        Some(r) => html(r.to_string()),
        None => error(StatusCode::NOT_FOUND, "no run has finished yet"),
    }
}

async fn metrics(State(d): State<Shared>) -> Response {
    no_store(
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            d.live.metrics_text(),
        )
            .into_response(),
    )
}

/// Whether `Origin` (when a browser sent one) names the host the request was sent to.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = origin.to_str().ok().and_then(|o| o.strip_prefix("http://"));
    matches!((origin, host), (Some(o), Some(h)) if o == h)
}

async fn stop(State(d): State<Shared>, headers: HeaderMap) -> Response {
    if headers.get(STOP_HEADER).is_none() || !same_origin(&headers) {
        return error(
            StatusCode::FORBIDDEN,
            "stop only from the dashboard's own page",
        );
    }
    if d.live.stop() {
        no_store(
            (
                StatusCode::ACCEPTED,
                axum::Json(json!({ "stopping": true })),
            )
                .into_response(),
        )
    } else {
        error(StatusCode::CONFLICT, "no run is going on")
    }
}

/// One page's event stream: its permit, its receiver, and whether the end was sent.
struct Stream1 {
    _permit: OwnedSemaphorePermit,
    rx: watch::Receiver<Arc<Frame>>,
    first: bool,
    ended: bool,
}

fn event(f: &Frame) -> (Event, bool) {
    match f.status {
        Status::Finished => {
            let html = f.report.as_deref().unwrap_or("");
            (
                Event::default()
                    .event("report")
                    .data(json!({ "html": html }).to_string()),
                true,
            )
        }
        Status::Failed => (
            Event::default().event("failed").data(
                json!({ "error": f.error.as_deref().unwrap_or("the run failed") }).to_string(),
            ),
            true,
        ),
        _ => (
            Event::default().event("frame").data(page::frame_data(f)),
            false,
        ),
    }
}

fn frames(s: Stream1) -> impl Stream<Item = Result<Event, Infallible>> {
    stream::unfold(s, |mut s| async move {
        if s.ended {
            return None;
        }
        if !s.first && s.rx.changed().await.is_err() {
            return None;
        }
        s.first = false;
        let f = s.rx.borrow_and_update().clone();
        let (ev, last) = event(&f);
        s.ended = last;
        Some((Ok(ev.retry(Duration::from_secs(2))), s))
    })
}

async fn events(State(d): State<Shared>) -> Response {
    let Ok(permit) = d.streams.clone().try_acquire_owned() else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too many dashboard pages open at once",
        );
    };
    let s = Stream1 {
        _permit: permit,
        rx: d.live.subscribe(),
        first: true,
        ended: false,
    };
    no_store(
        Sse::new(frames(s))
            .keep_alive(KeepAlive::default())
            .into_response(),
    )
}

/// The dashboard's router.
pub(super) fn router(shared: Shared) -> Router {
    Router::new()
        .route(PAGE_PATH, get(index))
        .route(EVENTS_PATH, get(events))
        .route(METRICS_PATH, get(metrics))
        .route(STOP_PATH, post(stop))
        .route(REPORT_PATH, get(report))
        .with_state(shared)
}
