//! The /metrics body, rendered once per change of the metrics and shared by every scrape until
//! the next change. It is rendered gzip-compressed (Prometheus always accepts gzip, and at ten
//! thousand pipelines the text is hundreds of megabytes, its gzip a few); a scraper that does
//! not accept gzip gets the text inflated piece by piece as it is sent, so the whole text is
//! never held in memory.
//!
//! Each format ([`Format`]: the text format, OpenMetrics, protobuf) has its own cached
//! rendering, made only when a scrape asks for that format: a Prometheus that negotiates
//! OpenMetrics or protobuf costs no text rendering, and scrapers of the text format pay nothing
//! for the others.

use std::io::{self, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;

use crate::metrics::{Format, Metrics};

/// A rendering older than this is redone even without a change, so the `process_*` metrics
/// (CPU, memory) stay fresh while no poll ends. Meanwhile scrapes are served the older one.
const MAX_AGE: Duration = Duration::from_secs(5);

/// Size of the pieces the text is inflated in.
const PIECE: usize = 64 * 1024;

/// One rendering of every metric family.
pub struct Rendered {
    version: u64,
    at: Instant,
    gzip: Bytes,
    format: Format,
}

impl Rendered {
    fn new(version: u64, gzip: Bytes, format: Format) -> Rendered {
        Rendered {
            version,
            at: Instant::now(),
            gzip,
            format,
        }
    }

    /// A rendering of a given text. Public for `examples/bench.rs serve` only (a saved
    /// /metrics served with no rendering: the benchmark's lower bound).
    pub fn of_text(text: &[u8]) -> Rendered {
        Rendered::new(0, compress(text), Format::Text)
    }

    /// The format it is in.
    pub fn format(&self) -> Format {
        self.format
    }

    /// The text exposition gzip-compressed.
    pub fn gzip(&self) -> Bytes {
        self.gzip.clone()
    }

    /// The text in pieces of at most [`PIECE`] bytes, each inflated as it is asked for: a
    /// scraper that reads slowly or goes away costs no more than the pieces on their way.
    pub fn pieces(&self) -> Pieces {
        Pieces {
            decoder: Some(GzDecoder::new(io::Cursor::new(self.gzip.clone()))),
        }
    }

    fn is_fresh(&self, version: u64) -> bool {
        self.version == version && self.at.elapsed() < MAX_AGE
    }
}

/// The text of a rendering, inflated a piece at a time (see [`Rendered::pieces`]). Each piece
/// takes well under a millisecond to inflate, so it is made on the runtime's workers as the
/// scraper reads: no thread of its own, whose memory would stay with it.
pub struct Pieces {
    /// `None` once the text is over (or broken).
    decoder: Option<GzDecoder<io::Cursor<Bytes>>>,
}

impl Iterator for Pieces {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<io::Result<Bytes>> {
        let decoder = self.decoder.as_mut()?;
        let mut piece = vec![0; PIECE];
        let mut filled = 0;
        while filled < PIECE {
            match decoder.read(&mut piece[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(err) => {
                    self.decoder = None;
                    return Some(Err(err));
                }
            }
        }
        if filled < PIECE {
            self.decoder = None;
        }
        if filled == 0 {
            return None;
        }
        piece.truncate(filled);
        Some(Ok(Bytes::from(piece)))
    }
}

/// Gzip of `text`.
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

/// What a scrape gets from the cache.
pub enum Lookup {
    /// Serve this rendering.
    Serve(Arc<Rendered>),
    /// Serve this rendering, which is only too old: refresh it in the background
    /// ([`Exposition::claim_refresh`], [`Exposition::refresh`]).
    ServeAndRefresh(Arc<Rendered>),
    /// The metrics changed and nobody renders them yet: render ([`Exposition::current`]).
    Render,
}

/// The cached rendering of one format.
#[derive(Default)]
struct Slot {
    /// The latest rendering; locked only to read or replace it.
    cache: Mutex<Option<Arc<Rendered>>>,
    /// Held while rendering, so that a change is rendered once however many scrape.
    rendering: Mutex<()>,
    /// A background refresh is on its way.
    refreshing: AtomicBool,
}

/// Caches the rendering of [`Metrics`], per format.
pub struct Exposition {
    metrics: Arc<Metrics>,
    text: Slot,
    openmetrics: Slot,
    protobuf: Slot,
}

/// Locks `mutex`; a panic while it was held leaves nothing half-written worth refusing.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl Exposition {
    /// A cache over `metrics`; renders on the first scrape.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Exposition {
            metrics,
            text: Slot::default(),
            openmetrics: Slot::default(),
            protobuf: Slot::default(),
        }
    }

    fn slot(&self, format: Format) -> &Slot {
        match format {
            Format::Text => &self.text,
            Format::OpenMetrics => &self.openmetrics,
            Format::Protobuf => &self.protobuf,
        }
    }

    /// What a scrape should serve in `format`, without waiting: the cached rendering while it
    /// is current; also when it is only older than [`MAX_AGE`], or while another scrape renders
    /// a change (the previous poll's view, whole, rather than a wait); a new rendering when the
    /// metrics changed since and nobody renders them yet.
    pub fn lookup(&self, format: Format) -> Lookup {
        let slot = self.slot(format);
        let Some(rendered) = lock(&slot.cache).clone() else {
            return Lookup::Render;
        };
        let version = self.metrics.version();
        if rendered.is_fresh(version) {
            Lookup::Serve(rendered)
        } else if rendered.version == version {
            Lookup::ServeAndRefresh(rendered)
        } else if slot.rendering.try_lock().is_err() {
            Lookup::Serve(rendered)
        } else {
            Lookup::Render
        }
    }

    /// The current rendering in `format`: the cached one unless the metrics changed since, or
    /// it is older than [`MAX_AGE`]. Concurrent callers wait for one rendering rather than each
    /// doing it. Blocks while rendering: call it off the async runtime.
    pub fn current(&self, format: Format) -> Arc<Rendered> {
        let slot = self.slot(format);
        let _rendering = lock(&slot.rendering);
        let metrics = &self.metrics;
        // Read before rendering: a change during the rendering makes the next scrape render.
        let version = metrics.version();
        let previous = lock(&slot.cache).clone();
        if let Some(rendered) = &previous
            && rendered.is_fresh(version)
        {
            return rendered.clone();
        }
        let expected = previous.map_or(0, |rendered| rendered.gzip.len());
        let gzip = metrics.render_gzip_as(format, expected);
        let rendered = Arc::new(Rendered::new(version, Bytes::from(gzip), format));
        *lock(&slot.cache) = Some(rendered.clone());
        rendered
    }

    /// True for the one caller that should run [`Exposition::refresh`] of `format`; false
    /// while one is on its way.
    pub fn claim_refresh(&self, format: Format) -> bool {
        !self.slot(format).refreshing.swap(true, Ordering::AcqRel)
    }

    /// Renders `format` again after [`Exposition::claim_refresh`]. Blocking, like `current`.
    pub fn refresh(&self, format: Format) {
        self.current(format);
        self.slot(format).refreshing.store(false, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MetricsConfig;
    use crate::store::Store;

    /// The whole text of `rendered`, read at once (independently of `pieces`).
    fn inflate(rendered: &Rendered) -> Vec<u8> {
        let mut text = Vec::new();
        GzDecoder::new(&rendered.gzip()[..])
            .read_to_end(&mut text)
            .expect("gzip");
        text
    }

    fn renders(rendered: &Rendered) -> String {
        let text = inflate(rendered);
        String::from_utf8_lossy(&text)
            .lines()
            .find(|line| line.starts_with("codearts_exporter_metrics_renders_total "))
            .map(str::to_string)
            .unwrap_or_default()
    }

    /// A store and the metrics that render it.
    fn store_and_metrics() -> (Store, Arc<Metrics>) {
        let store = Store::new(&MetricsConfig::default()).expect("store");
        let metrics = Arc::new(Metrics::new(&store).expect("metrics"));
        (store, metrics)
    }

    fn served(lookup: Lookup) -> Option<Arc<Rendered>> {
        match lookup {
            Lookup::Serve(rendered) => Some(rendered),
            Lookup::ServeAndRefresh(_) | Lookup::Render => None,
        }
    }

    #[test]
    fn scrapes_share_a_rendering_until_the_metrics_change() {
        let (store, metrics) = store_and_metrics();
        let exposition = Exposition::new(metrics.clone());
        let first = exposition.current(Format::Text);
        let second = exposition.current(Format::Text);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(renders(&first), "codearts_exporter_metrics_renders_total 1");

        let slot = store.target("t", Duration::from_secs(60));
        slot.series(|series| series.poll_finished(Duration::from_millis(5), true, 10.0));
        let third = exposition.current(Format::Text);
        assert!(!Arc::ptr_eq(&second, &third));
        assert_eq!(renders(&third), "codearts_exporter_metrics_renders_total 2");
        let text = inflate(&third);
        assert!(
            String::from_utf8_lossy(&text).contains("codearts_exporter_target_up{target=\"t\"} 1")
        );
    }

    #[test]
    fn the_text_inflates_in_pieces_that_add_up_to_the_whole() {
        let (store, metrics) = store_and_metrics();
        // Enough series for several pieces.
        let slots: Vec<_> = (0..3000)
            .map(|i| store.target(&format!("target-{i}"), Duration::from_secs(60)))
            .collect();
        for slot in &slots {
            slot.series(|series| series.poll_finished(Duration::from_millis(5), true, 1.0));
        }
        let rendered = Exposition::new(metrics.clone()).current(Format::Text);
        let whole = inflate(&rendered);
        assert!(whole.len() > 2 * PIECE, "{} bytes", whole.len());
        let pieces: Vec<Bytes> = rendered
            .pieces()
            .collect::<io::Result<_>>()
            .expect("inflate");
        assert!(pieces.len() > 2 && pieces.iter().all(|p| p.len() <= PIECE));
        assert_eq!(pieces.concat(), whole);
        // Broken gzip ends the pieces with its error.
        let broken = Rendered::new(
            0,
            rendered.gzip().slice(..rendered.gzip().len() / 2),
            Format::Text,
        );
        let mut pieces = broken.pieces();
        assert!(pieces.by_ref().any(|piece| piece.is_err()));
        assert!(pieces.next().is_none());
        // Rendered with gzip or without, the same families.
        let plain = String::from_utf8(metrics.render()).expect("utf-8");
        let text = String::from_utf8(whole).expect("utf-8");
        let families = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| l.starts_with("# TYPE"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(families(&plain), families(&text));
    }

    #[test]
    fn a_change_is_rendered_by_one_scrape_while_others_get_the_previous_rendering() {
        let (_store, metrics) = store_and_metrics();
        let exposition = Exposition::new(metrics.clone());
        assert!(
            matches!(exposition.lookup(Format::Text), Lookup::Render),
            "nothing rendered yet"
        );
        let first = exposition.current(Format::Text);
        let cached = served(exposition.lookup(Format::Text)).expect("cached");
        assert!(Arc::ptr_eq(&first, &cached));

        metrics.config_reloaded(true);
        assert!(
            matches!(exposition.lookup(Format::Text), Lookup::Render),
            "a change is rendered"
        );
        {
            // While a scrape renders, the others are served the previous rendering at once.
            let _rendering = lock(&exposition.text.rendering);
            let previous = served(exposition.lookup(Format::Text)).expect("previous rendering");
            assert!(Arc::ptr_eq(&first, &previous));
        }
        let second = exposition.current(Format::Text);
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(
            &second,
            &served(exposition.lookup(Format::Text)).expect("cached")
        ));
    }

    #[test]
    fn an_old_rendering_is_served_while_one_refresh_renders_it_again() {
        let (_store, metrics) = store_and_metrics();
        let exposition = Exposition::new(metrics.clone());
        let old = Arc::new(Rendered {
            at: Instant::now() - MAX_AGE,
            ..Rendered::new(metrics.version(), Bytes::new(), Format::Text)
        });
        *lock(&exposition.text.cache) = Some(old.clone());
        match exposition.lookup(Format::Text) {
            Lookup::ServeAndRefresh(rendered) => assert!(Arc::ptr_eq(&rendered, &old)),
            _ => panic!("an old rendering is served and refreshed"),
        }
        assert!(exposition.claim_refresh(Format::Text));
        assert!(
            !exposition.claim_refresh(Format::Text),
            "one refresh at a time"
        );
        exposition.refresh(Format::Text);
        let fresh = served(exposition.lookup(Format::Text)).expect("refreshed");
        assert!(!Arc::ptr_eq(&fresh, &old));
        assert!(
            exposition.claim_refresh(Format::Text),
            "the refresh is over"
        );
    }

    #[test]
    fn a_given_text_is_served_as_its_gzip() {
        let rendered = Rendered::of_text(b"x 1\n");
        assert_eq!(inflate(&rendered), b"x 1\n");
    }

    #[test]
    fn each_format_has_its_own_rendering_made_only_when_asked_for() {
        let (_store, metrics) = store_and_metrics();
        let exposition = Exposition::new(metrics.clone());
        let text = exposition.current(Format::Text);
        assert!(matches!(
            exposition.lookup(Format::OpenMetrics),
            Lookup::Render
        ));
        let om = exposition.current(Format::OpenMetrics);
        assert_eq!(om.format(), Format::OpenMetrics);
        assert!(inflate(&om).ends_with(b"# EOF\n"));
        assert!(!inflate(&text).ends_with(b"# EOF\n"));
        // Both cached: scrapes of either share their rendering.
        assert!(Arc::ptr_eq(
            &om,
            &served(exposition.lookup(Format::OpenMetrics)).expect("cached")
        ));
        assert!(Arc::ptr_eq(
            &text,
            &served(exposition.lookup(Format::Text)).expect("cached")
        ));
    }
}
