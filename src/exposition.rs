//! The /metrics body, rendered once per change of the metrics and shared by every scrape until
//! the next change, as text and, for scrapers that accept it, gzip.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::metrics::Metrics;

/// A rendering older than this is redone even without a change, so the `process_*` metrics
/// (CPU, memory) stay fresh while no poll ends.
const MAX_AGE: Duration = Duration::from_secs(5);

/// One rendering of every metric family.
pub struct Rendered {
    version: u64,
    at: Instant,
    text: Bytes,
    gzip: OnceLock<Bytes>,
}

impl Rendered {
    /// The text exposition.
    pub fn text(&self) -> Bytes {
        self.text.clone()
    }

    /// The text exposition gzip-compressed, compressed on first use.
    pub fn gzip(&self) -> Bytes {
        self.gzip
            .get_or_init(|| {
                let mut encoder =
                    GzEncoder::new(Vec::with_capacity(self.text.len() / 8), Compression::fast());
                // Writing to a Vec cannot fail; if it ever did, the plain text still serves.
                match encoder
                    .write_all(&self.text)
                    .and_then(|()| encoder.finish())
                {
                    Ok(compressed) => Bytes::from(compressed),
                    Err(err) => {
                        tracing::error!(error = %err, "cannot gzip /metrics");
                        Bytes::new()
                    }
                }
            })
            .clone()
    }
}

/// Caches the rendering of [`Metrics`].
pub struct Exposition {
    /// `None` for a fixed body that is never rendered again.
    metrics: Option<Arc<Metrics>>,
    cache: Mutex<Option<Arc<Rendered>>>,
}

impl Exposition {
    /// A cache over `metrics`; renders on the first scrape.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Exposition {
            metrics: Some(metrics),
            cache: Mutex::new(None),
        }
    }

    /// Always `text`, as if rendered once and never changed (the benchmarks' lower bound).
    pub fn frozen(text: Bytes) -> Self {
        let rendered = Rendered {
            version: 0,
            at: Instant::now(),
            text,
            gzip: OnceLock::new(),
        };
        Exposition {
            metrics: None,
            cache: Mutex::new(Some(Arc::new(rendered))),
        }
    }

    /// The current rendering: the cached one unless the metrics changed since, or it is older
    /// than [`MAX_AGE`]. Concurrent scrapes wait for one rendering rather than each doing it.
    pub fn current(&self) -> Arc<Rendered> {
        let mut cache = match self.cache.lock() {
            Ok(guard) => guard,
            // A panic while rendering leaves nothing half-written worth keeping.
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(metrics) = &self.metrics else {
            return match cache.as_ref() {
                Some(rendered) => rendered.clone(),
                None => Arc::new(Rendered {
                    version: 0,
                    at: Instant::now(),
                    text: Bytes::new(),
                    gzip: OnceLock::new(),
                }),
            };
        };
        // Read before rendering: a change during the rendering makes the next scrape render.
        let version = metrics.version();
        if let Some(rendered) = cache.as_ref()
            && rendered.version == version
            && rendered.at.elapsed() < MAX_AGE
        {
            return rendered.clone();
        }
        let rendered = Arc::new(Rendered {
            version,
            at: Instant::now(),
            text: Bytes::from(metrics.render()),
            gzip: OnceLock::new(),
        });
        *cache = Some(rendered.clone());
        rendered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricsConfig;
    use std::io::Read;

    fn renders(text: &[u8]) -> String {
        String::from_utf8_lossy(text)
            .lines()
            .find(|line| line.starts_with("codearts_exporter_metrics_renders_total "))
            .map(str::to_string)
            .unwrap_or_default()
    }

    #[test]
    fn scrapes_share_a_rendering_until_the_metrics_change() {
        let metrics = Arc::new(Metrics::new(&MetricsConfig::default()).expect("metrics"));
        let exposition = Exposition::new(metrics.clone());
        let first = exposition.current();
        let second = exposition.current();
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(
            renders(&first.text()),
            "codearts_exporter_metrics_renders_total 1"
        );

        metrics.poll_finished("t", Duration::from_millis(5), true, 10.0);
        let third = exposition.current();
        assert!(!Arc::ptr_eq(&second, &third));
        assert_eq!(
            renders(&third.text()),
            "codearts_exporter_metrics_renders_total 2"
        );
        assert!(
            String::from_utf8_lossy(&third.text())
                .contains("codearts_exporter_target_up{target=\"t\"} 1")
        );
    }

    #[test]
    fn the_gzip_body_inflates_to_the_text() {
        let metrics = Arc::new(Metrics::new(&MetricsConfig::default()).expect("metrics"));
        let rendered = Exposition::new(metrics).current();
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&rendered.gzip()[..])
            .read_to_end(&mut inflated)
            .expect("gzip");
        assert_eq!(inflated, rendered.text());
        assert!(rendered.gzip().len() < rendered.text().len());
    }
}
