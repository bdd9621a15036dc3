//! The built-in behaviors: validation, timeout, retry on conflict, metrics, tracing.

use std::time::{Duration, Instant};

use flext_domain::{Error, ErrorCode};
use flext_ports::{Context, Metrics};
use tracing::Instrument;

use crate::pipeline::{Behavior, BoxFuture, Message, Next, Reply};
use crate::repository::RetryPolicy;

/// Runs the message's own checks first and returns every violation at once, with its code
/// and field path, without calling the handler.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidationLayer;

impl Behavior for ValidationLayer {
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        _ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        Box::pin(async move {
            message
                .validate()
                .map_err(|e| e.with_detail("message_type", message.name()))?;
            next.run().await
        })
    }
}

/// Bounds the rest of the pipeline by the context's deadline, or by a default timeout
/// when the context has none; past it the call is dropped and the caller gets
/// `DeadlineExceeded`.
#[derive(Debug, Clone, Copy)]
pub struct TimeoutLayer {
    default: Duration,
}

impl Default for TimeoutLayer {
    /// A default of 30 seconds.
    fn default() -> Self {
        TimeoutLayer::new(Duration::from_secs(30))
    }
}

impl TimeoutLayer {
    /// Uses `default` when the context carries no deadline.
    pub fn new(default: Duration) -> Self {
        TimeoutLayer { default }
    }
}

impl Behavior for TimeoutLayer {
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        let deadline = ctx
            .deadline()
            .unwrap_or_else(|| Instant::now() + self.default);
        Box::pin(async move {
            match tokio::time::timeout_at(deadline.into(), next.run()).await {
                Ok(result) => result,
                Err(_) => Err(Error::deadline_exceeded(
                    "DEADLINE_EXCEEDED",
                    format!(
                        "{} {} did not finish before its deadline",
                        message.kind().as_str(),
                        message.name()
                    ),
                )
                .with_detail("message_type", message.name())),
            }
        })
    }
}

/// Runs the rest of the pipeline again when it fails with a conflict (`Aborted`: another
/// writer won a race), with exponential backoff and full jitter, up to the policy's
/// attempts; other errors pass through at once.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryLayer {
    policy: RetryPolicy,
}

impl RetryLayer {
    /// Retries by `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryLayer { policy }
    }
}

impl Behavior for RetryLayer {
    fn handle<'s, 'a: 's>(
        &'s self,
        _message: Message<'a>,
        _ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                match next.run().await {
                    Err(e)
                        if e.code() == ErrorCode::CONFLICT
                            && attempt < self.policy.attempts.max(1) =>
                    {
                        tokio::time::sleep(self.policy.delay(attempt)).await;
                        attempt += 1;
                    }
                    other => return other,
                }
            }
        })
    }
}

/// Counts dispatches (`flext.dispatch.count`) and records their latency in seconds
/// (`flext.dispatch.duration`), labelled `kind`, `message_type` and `outcome` (`ok` or the
/// error code's name), through the [`Metrics`] port.
#[derive(Debug, Clone)]
pub struct MetricsLayer<M> {
    metrics: M,
}

impl<M: Metrics + 'static> MetricsLayer<M> {
    /// Records into `metrics`.
    pub fn new(metrics: M) -> Self {
        MetricsLayer { metrics }
    }
}

impl<M: Metrics + 'static> Behavior for MetricsLayer<M> {
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        _ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        Box::pin(async move {
            let start = Instant::now();
            let result = next.run().await;
            let outcome = match &result {
                Ok(_) => "ok",
                Err(e) => e.code().as_str(),
            };
            let labels = [
                ("kind", message.kind().as_str()),
                ("message_type", message.name()),
                ("outcome", outcome),
            ];
            self.metrics.count("flext.dispatch.count", 1, &labels);
            self.metrics.observe(
                "flext.dispatch.duration",
                start.elapsed().as_secs_f64(),
                &labels,
            );
            result
        })
    }
}

/// Runs the rest of the pipeline in a `tracing` span `flext.dispatch` carrying the
/// message kind and type, correlation, causation and message ids, and, when it ends, the
/// outcome and the error code and reason.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingLayer;

impl Behavior for TracingLayer {
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        let span = tracing::info_span!(
            "flext.dispatch",
            messaging.operation = message.kind().as_str(),
            message.r#type = message.name(),
            message.id = %ctx.message_id(),
            correlation_id = %ctx.correlation_id(),
            causation_id = tracing::field::Empty,
            outcome = tracing::field::Empty,
            error.code = tracing::field::Empty,
            error.reason = tracing::field::Empty,
        );
        if let Some(causation) = ctx.causation_id() {
            span.record("causation_id", tracing::field::display(causation));
        }
        let recorder = span.clone();
        Box::pin(
            async move {
                let result = next.run().await;
                match &result {
                    Ok(_) => {
                        recorder.record("outcome", "ok");
                    }
                    Err(e) => {
                        recorder.record("outcome", "error");
                        recorder.record("error.code", e.code().as_str());
                        recorder.record("error.reason", e.reason());
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}
