//! The /metrics body, rendered once per change of the metrics and shared by every scrape until
//! the next change. It is rendered gzip-compressed (Prometheus always accepts gzip, and at ten
//! thousand pipelines the text is hundreds of megabytes); the text is inflated from it for the
//! first scraper that does not accept gzip.

use std::io::Read;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::metrics::Metrics;

/// A rendering older than this is redone even without a change, so the `process_*` metrics
/// (CPU, memory) stay fresh while no poll ends.
const MAX_AGE: Duration = Duration::from_secs(5);

/// One rendering of every metric family.
pub struct Rendered {
    version: u64,
    at: Instant,
    gzip: Bytes,
    text: OnceLock<Bytes>,
}

impl Rendered {
    fn new(version: u64, gzip: Bytes) -> Rendered {
        Rendered {
            version,
            at: Instant::now(),
            gzip,
            text: OnceLock::new(),
        }
    }

    /// The text exposition, inflated on first use.
    pub fn text(&self) -> Bytes {
        self.text
            .get_or_init(|| {
                let mut text = Vec::with_capacity(self.gzip.len() * 8);
                match GzDecoder::new(&self.gzip[..]).read_to_end(&mut text) {
                    Ok(_) => Bytes::from(text),
                    Err(err) => {
                        // Only a bug could make our own gzip unreadable; serve what inflated.
                        tracing::error!(error = %err, "cannot inflate /metrics");
                        Bytes::from(text)
                    }
                }
            })
            .clone()
    }

    /// The text exposition if it has been inflated already.
    pub fn inflated(&self) -> Option<Bytes> {
        self.text.get().cloned()
    }

    /// The text exposition gzip-compressed.
    pub fn gzip(&self) -> Bytes {
        self.gzip.clone()
    }

    fn is_fresh(&self, version: u64) -> bool {
        self.version == version && self.at.elapsed() < MAX_AGE
    }
}

/// Gzip of `text` (for a fixed body).
fn compress(text: &[u8]) -> Bytes {
    use std::io::Write;
    let mut encoder = GzEncoder::new(Vec::with_capacity(text.len() / 8), Compression::fast());
    match encoder.write_all(text).and_then(|()| encoder.finish()) {
        Ok(compressed) => Bytes::from(compressed),
        Err(err) => {
            tracing::error!(error = %err, "cannot gzip /metrics");
            Bytes::new()
        }
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
        let rendered = Rendered::new(0, compress(&text));
        // The text is the one given, not inflated again.
        let _ = rendered.text.set(text);
        Exposition {
            metrics: None,
            cache: Mutex::new(Some(Arc::new(rendered))),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Arc<Rendered>>> {
        // A panic while rendering leaves nothing half-written worth keeping.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached rendering if it is current, without waiting for one in progress: scrapes take
    /// this path without leaving the async runtime.
    pub fn cached(&self) -> Option<Arc<Rendered>> {
        let cache = self.cache.try_lock().ok()?;
        let rendered = cache.as_ref()?;
        match &self.metrics {
            None => Some(rendered.clone()),
            Some(metrics) => rendered
                .is_fresh(metrics.version())
                .then(|| rendered.clone()),
        }
    }

    /// The current rendering: the cached one unless the metrics changed since, or it is older
    /// than [`MAX_AGE`]. Concurrent scrapes wait for one rendering rather than each doing it.
    /// Blocks while rendering: call it off the async runtime.
    pub fn current(&self) -> Arc<Rendered> {
        let mut cache = self.lock();
        let Some(metrics) = &self.metrics else {
            return cache
                .get_or_insert_with(|| Arc::new(Rendered::new(0, Bytes::new())))
                .clone();
        };
        // Read before rendering: a change during the rendering makes the next scrape render.
        let version = metrics.version();
        if let Some(rendered) = cache.as_ref()
            && rendered.is_fresh(version)
        {
            return rendered.clone();
        }
        let rendered = Arc::new(Rendered::new(version, Bytes::from(metrics.render_gzip())));
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
        let rendered = Exposition::new(metrics.clone()).current();
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&rendered.gzip()[..])
            .read_to_end(&mut inflated)
            .expect("gzip");
        assert_eq!(inflated, rendered.text());
        assert!(rendered.gzip().len() < rendered.text().len());
        // Rendered with gzip or without, the same families (the version and render counter
        // aside, every line of the exporter's own families is there).
        let plain = String::from_utf8(metrics.render()).expect("utf-8");
        let text = String::from_utf8(inflated).expect("utf-8");
        let families = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("# TYPE"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(families(&plain), families(&text));
    }

    #[test]
    fn the_cached_rendering_is_served_until_the_metrics_change() {
        let metrics = Arc::new(Metrics::new(&MetricsConfig::default()).expect("metrics"));
        let exposition = Exposition::new(metrics.clone());
        assert!(exposition.cached().is_none(), "nothing rendered yet");
        let first = exposition.current();
        let cached = exposition.cached().expect("cached");
        assert!(Arc::ptr_eq(&first, &cached));
        metrics.changed();
        assert!(exposition.cached().is_none(), "stale after a change");
    }

    #[test]
    fn a_frozen_exposition_serves_its_body() {
        let exposition = Exposition::frozen(Bytes::from_static(b"x 1\n"));
        let rendered = exposition.cached().expect("always cached");
        assert_eq!(&rendered.text()[..], b"x 1\n");
        let mut inflated = Vec::new();
        flate2::read::GzDecoder::new(&rendered.gzip()[..])
            .read_to_end(&mut inflated)
            .expect("gzip");
        assert_eq!(inflated, b"x 1\n");
        assert!(Arc::ptr_eq(&rendered, &exposition.current()));
    }
}
