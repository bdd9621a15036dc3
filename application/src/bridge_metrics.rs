//! The bridge's reports as metrics: `flext-bridge` depends on the domain only, so this
//! adapter from its [`Observer`] to the [`Metrics`] port lives here.

use std::time::Duration;

use flext_bridge::{Format, Observer, Operation};
use flext_ports::Metrics;

/// Counts encodes and decodes and records their sizes and latency, by format and outcome:
///
/// - `flext.bridge.messages` (count), labels `operation` (`encode`/`decode`), `format`
///   (`msgpack`/`protobuf`), `outcome` (`ok`/`error`);
/// - `flext.bridge.bytes` (observation, bytes), labels `operation`, `format`;
/// - `flext.bridge.duration` (observation, seconds), labels `operation`, `format`.
///
/// ```
/// use flext::application::BridgeMetrics;
/// use flext::bridge::{Envelope, Value, msgpack};
///
/// let metrics = BridgeMetrics::new(()); // any `Metrics`: OpenTelemetry, Prometheus...
/// let bytes = msgpack::encode_observed(&Envelope::ok_value(Value::Int(1)), &metrics)?;
/// msgpack::decode_observed(&bytes, &metrics)?;
/// # Ok::<(), flext::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct BridgeMetrics<M> {
    metrics: M,
}

impl<M: Metrics> BridgeMetrics<M> {
    /// Reports to `metrics`.
    pub fn new(metrics: M) -> Self {
        BridgeMetrics { metrics }
    }
}

impl<M: Metrics> Observer for BridgeMetrics<M> {
    fn observe(
        &self,
        operation: Operation,
        format: Format,
        bytes: usize,
        elapsed: Duration,
        ok: bool,
    ) {
        let (op, fmt) = (operation.as_str(), format.as_str());
        let outcome = if ok { "ok" } else { "error" };
        self.metrics.count(
            "flext.bridge.messages",
            1,
            &[("operation", op), ("format", fmt), ("outcome", outcome)],
        );
        let labels = [("operation", op), ("format", fmt)];
        self.metrics
            .observe("flext.bridge.bytes", bytes as f64, &labels);
        self.metrics
            .observe("flext.bridge.duration", elapsed.as_secs_f64(), &labels);
    }
}
