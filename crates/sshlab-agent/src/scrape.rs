//! Fetching the server's Prometheus `/metrics` before, during and after a run. What the
//! samples mean (deltas, CPU, RSS slope, leak warning) is computed in
//! [`sshlab_core::results::server_metrics`].

use std::time::Duration;

use sshlab_core::results::server_metrics::{PhaseSamples, Sample};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Why a scrape failed.
#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    /// Connecting, sending or reading failed (including the timeout).
    #[error("scraping {url}: {source}")]
    Http {
        /// The metrics URL.
        url: String,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// A non-success HTTP status.
    #[error("scraping {url}: HTTP {status}")]
    Status {
        /// The metrics URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The body held no sample lines.
    #[error("scraping {url}: no Prometheus samples in the response")]
    NoSamples {
        /// The metrics URL.
        url: String,
    },
}

/// Fetches one `/metrics` URL.
#[derive(Debug, Clone)]
pub struct Scraper {
    url: String,
    client: reqwest::Client,
}

impl Scraper {
    /// A scraper for `url` whose requests give up after `timeout`.
    pub fn new(url: impl Into<String>, timeout: Duration) -> Result<Self, ScrapeError> {
        let url = url.into();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|source| ScrapeError::Http {
                url: url.clone(),
                source,
            })?;
        Ok(Self { url, client })
    }

    /// The URL scraped.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Fetch and parse the metrics once.
    pub async fn scrape(&self) -> Result<Sample, ScrapeError> {
        let http = |source| ScrapeError::Http {
            url: self.url.clone(),
            source,
        };
        let resp = self
            .client
            .get(&self.url)
            .header("Accept", "text/plain; version=0.0.4")
            .send()
            .await
            .map_err(http)?;
        if !resp.status().is_success() {
            return Err(ScrapeError::Status {
                url: self.url.clone(),
                status: resp.status().as_u16(),
            });
        }
        let text = resp.text().await.map_err(http)?;
        let sample = Sample::parse(&text);
        if sample.series.is_empty() {
            return Err(ScrapeError::NoSamples {
                url: self.url.clone(),
            });
        }
        Ok(sample)
    }
}

/// A phase boundary, set by the engine: the scrape loop takes a sample at once, so the
/// server's counters can be read per phase (new SSH connections against pool hits, sessions
/// left at the end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhaseMark {
    /// The phase's workers are connected and about to start.
    Start(Option<String>),
    /// The phase's workers have stopped and released their handles.
    End(Option<String>),
}

/// What a run's scraping gathered.
#[derive(Debug, Default)]
pub struct Scraped {
    /// (seconds since the loop started, sample), periodic and at the marks, in time order.
    pub samples: Vec<(f64, Sample)>,
    /// Samples at each phase's start and end.
    pub phases: Vec<PhaseSamples>,
    /// Scrapes that failed.
    pub failures: u32,
    /// The last failure's message.
    pub last_error: Option<String>,
}

impl Scraped {
    fn take(&mut self, t: f64, r: Result<Sample, ScrapeError>) -> Option<Sample> {
        match r {
            Ok(s) => {
                self.samples.push((t, s.clone()));
                Some(s)
            }
            Err(e) => {
                self.failures += 1;
                self.last_error = Some(e.to_string());
                None
            }
        }
    }

    fn mark(&mut self, mark: PhaseMark, t: f64, sample: Option<Sample>) {
        match mark {
            PhaseMark::Start(label) => self.phases.push(PhaseSamples {
                label,
                start: sample,
                end: None,
                start_t: t,
                end_t: t,
            }),
            PhaseMark::End(label) => match self.phases.last_mut() {
                Some(p) if p.label == label && p.end.is_none() => {
                    p.end = sample;
                    p.end_t = t;
                }
                _ => self.phases.push(PhaseSamples {
                    label,
                    start: None,
                    end: sample,
                    start_t: t,
                    end_t: t,
                }),
            },
        }
    }
}

/// A mark and the answer the loop gives once its sample is taken.
pub type Marked = (PhaseMark, oneshot::Sender<()>);

/// Where phase marks go: [`Marks::mark`] returns once the mark's sample is taken, so a phase's
/// start sample is taken before its workers begin and its end sample after they stopped.
#[derive(Debug, Clone)]
pub struct Marks(mpsc::UnboundedSender<Marked>);

impl Marks {
    /// How long a mark waits for its sample at most (a server that does not answer /metrics
    /// must not hold up the run).
    const WAIT: Duration = Duration::from_secs(6);

    /// Sets `mark` and waits (bounded) until its sample is taken.
    pub async fn mark(&self, mark: PhaseMark) {
        let (done, taken) = oneshot::channel();
        if self.0.send((mark, done)).is_ok() {
            let _ = tokio::time::timeout(Self::WAIT, taken).await;
        }
    }
}

/// Told what the loop has gathered after each scrape and mark during the run (the live
/// dashboard shows the server's figures and the current phase from it).
pub type OnScrape = Box<dyn FnMut(&Scraped) + Send>;

/// Scrapes every `every` until stopped, once at each [`PhaseMark`], and once more at the end.
#[derive(Debug)]
pub struct ScrapeLoop {
    stop: CancellationToken,
    marks: mpsc::UnboundedSender<Marked>,
    task: JoinHandle<Scraped>,
}

impl ScrapeLoop {
    /// Starts it; `scraper` is `None` when no client could be built (every scrape then counts
    /// as failed with `why`). `on_scrape` is told after every scrape during the run.
    pub fn start(
        scraper: Result<Scraper, ScrapeError>,
        every: Duration,
        mut on_scrape: Option<OnScrape>,
    ) -> Self {
        let stop = CancellationToken::new();
        let (marks, mut rx) = mpsc::unbounded_channel();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let mut out = Scraped::default();
            let scraper = match scraper {
                Ok(s) => s,
                Err(e) => {
                    out.failures = 1;
                    out.last_error = Some(e.to_string());
                    return out;
                }
            };
            let mut tick = tokio::time::interval(every);
            loop {
                let mark: Option<Marked> = tokio::select! {
                    _ = tick.tick() => None,
                    Some(m) = rx.recv() => Some(m),
                    () = stopped.cancelled() => break,
                };
                let t = started.elapsed().as_secs_f64();
                let sample = out.take(t, scraper.scrape().await);
                if let Some((m, done)) = mark {
                    out.mark(m, t, sample);
                    let _ = done.send(());
                }
                if let Some(f) = on_scrape.as_mut() {
                    f(&out);
                }
            }
            // Marks sent just before the stop, then the final sample, after the load.
            while let Ok((m, done)) = rx.try_recv() {
                let t = started.elapsed().as_secs_f64();
                let sample = out.take(t, scraper.scrape().await);
                out.mark(m, t, sample);
                let _ = done.send(());
            }
            out.take(started.elapsed().as_secs_f64(), scraper.scrape().await);
            out
        });
        Self { stop, marks, task }
    }

    /// Where the engine sends its phase marks.
    pub fn marks(&self) -> Marks {
        Marks(self.marks.clone())
    }

    /// Stops it (after one last scrape) and returns what it gathered.
    pub async fn finish(self) -> Scraped {
        self.stop.cancel();
        self.task.await.unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "mcp_pool_hits_total 10\nmcp_pool_misses_total 5\n";

    #[tokio::test]
    async fn scrapes_over_http_and_reports_errors() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            for (status, body) in [
                ("200 OK", TEXT),
                ("500 Internal Server Error", "x"),
                ("200 OK", "<html>"),
            ] {
                let (mut sock, _) = listener.accept().await.expect("accept");
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let resp = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                sock.write_all(resp.as_bytes()).await.expect("write");
                let _ = sock.shutdown().await;
            }
        });
        let url = format!("http://{addr}/metrics");
        let s = Scraper::new(&url, Duration::from_secs(5)).expect("client");
        assert_eq!(s.url(), url);
        let sample = s.scrape().await.expect("scrape");
        assert_eq!(sample.get("mcp_pool_hits_total"), Some(10.0));
        assert!(matches!(
            s.scrape().await,
            Err(ScrapeError::Status { status: 500, .. })
        ));
        assert!(matches!(
            s.scrape().await,
            Err(ScrapeError::NoSamples { .. })
        ));
        server.await.expect("server");

        // Nobody listening: a clear error in bounded time.
        let dead = Scraper::new(format!("http://{addr}/metrics"), Duration::from_millis(500))
            .expect("client");
        let e = dead.scrape().await.expect_err("refused");
        assert!(matches!(e, ScrapeError::Http { .. }));
        assert!(e.to_string().contains("/metrics"), "{e}");
    }
}
