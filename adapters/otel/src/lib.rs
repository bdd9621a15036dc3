//! flext's OpenTelemetry wiring. [`OtelMetrics`] implements the metrics port on an
//! OpenTelemetry [`Meter`]: every `count` is a `u64` counter, every `observe` a histogram
//! and every `gauge` an `f64` gauge, named as flext names them (`flext.dispatch`,
//! `flext.projection.batch.size`, ...), labels as attributes. Give it to the behaviors
//! (`MetricsLayer`), the projection runner and the bridge (`BridgeMetrics`).
//!
//! ```
//! use flext_otel::OtelMetrics;
//! use flext_ports::Metrics;
//!
//! let meter = opentelemetry::global::meter("my-service");
//! let metrics = OtelMetrics::new(meter);
//! metrics.count("flext.dispatch", 1, &[("message_type", "open"), ("outcome", "ok")]);
//! ```

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use flext_ports::{Labels, Metrics};
use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter};

/// The metrics port on an OpenTelemetry meter; instruments are made on first use and
/// kept.
pub struct OtelMetrics {
    meter: Meter,
    counters: Mutex<HashMap<&'static str, Counter<u64>>>,
    histograms: Mutex<HashMap<&'static str, Histogram<f64>>>,
    gauges: Mutex<HashMap<&'static str, Gauge<f64>>>,
}

impl std::fmt::Debug for OtelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OtelMetrics").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Instruments are only ever inserted whole: a poisoned map is still consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn attributes(labels: Labels<'_>) -> Vec<KeyValue> {
    labels
        .iter()
        .map(|(k, v)| KeyValue::new(*k, v.to_string()))
        .collect()
}

impl OtelMetrics {
    /// Records on `meter`.
    pub fn new(meter: Meter) -> Self {
        OtelMetrics {
            meter,
            counters: Mutex::default(),
            histograms: Mutex::default(),
            gauges: Mutex::default(),
        }
    }
}

impl Metrics for OtelMetrics {
    fn count(&self, name: &'static str, value: u64, labels: Labels<'_>) {
        let counter = lock(&self.counters)
            .entry(name)
            .or_insert_with(|| self.meter.u64_counter(name).build())
            .clone();
        counter.add(value, &attributes(labels));
    }

    fn observe(&self, name: &'static str, value: f64, labels: Labels<'_>) {
        let histogram = lock(&self.histograms)
            .entry(name)
            .or_insert_with(|| self.meter.f64_histogram(name).build())
            .clone();
        histogram.record(value, &attributes(labels));
    }

    fn gauge(&self, name: &'static str, value: f64, labels: Labels<'_>) {
        let gauge = lock(&self.gauges)
            .entry(name)
            .or_insert_with(|| self.meter.f64_gauge(name).build())
            .clone();
        gauge.record(value, &attributes(labels));
    }
}
