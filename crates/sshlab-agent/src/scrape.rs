//! Fetching the server's Prometheus `/metrics` before, during and after a run. What the
//! samples mean (deltas, CPU, RSS slope, leak warning) is computed in
//! [`sshlab_core::results::server_metrics`].

use std::time::Duration;

use sshlab_core::results::server_metrics::Sample;

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
