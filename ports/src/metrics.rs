//! The metrics port: counters, histograms and gauges by name and labels, so an
//! OpenTelemetry (or any) recorder plugs in without flext depending on it.

use std::sync::Arc;

/// Label pairs of one measurement, e.g. `[("message_type", "account.open")]`.
pub type Labels<'a> = &'a [(&'static str, &'a str)];

/// Receives flext's measurements. Every method has an empty default, so a recorder
/// implements only what it exports; `()` records nothing.
pub trait Metrics: Send + Sync {
    /// Adds `value` to the counter `name`.
    fn count(&self, name: &'static str, value: u64, labels: Labels<'_>) {
        let _ = (name, value, labels);
    }

    /// Records one observation of the histogram `name` (durations in seconds).
    fn observe(&self, name: &'static str, value: f64, labels: Labels<'_>) {
        let _ = (name, value, labels);
    }

    /// Sets the gauge `name`.
    fn gauge(&self, name: &'static str, value: f64, labels: Labels<'_>) {
        let _ = (name, value, labels);
    }
}

impl Metrics for () {}

impl<M: Metrics + ?Sized> Metrics for Arc<M> {
    fn count(&self, name: &'static str, value: u64, labels: Labels<'_>) {
        (**self).count(name, value, labels)
    }
    fn observe(&self, name: &'static str, value: f64, labels: Labels<'_>) {
        (**self).observe(name, value, labels)
    }
    fn gauge(&self, name: &'static str, value: f64, labels: Labels<'_>) {
        (**self).gauge(name, value, labels)
    }
}
