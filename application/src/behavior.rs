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
pub struct ValidationBehavior;

impl Behavior for ValidationBehavior {
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
pub struct TimeoutBehavior {
    default: Duration,
}

impl Default for TimeoutBehavior {
    /// A default of 30 seconds.
    fn default() -> Self {
        TimeoutBehavior::new(Duration::from_secs(30))
    }
}

impl TimeoutBehavior {
    /// Uses `default` when the context carries no deadline.
    pub fn new(default: Duration) -> Self {
        TimeoutBehavior { default }
    }
}

impl Behavior for TimeoutBehavior {
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        // A default too long to represent as an instant is no deadline at all.
        let Some(deadline) = ctx
            .deadline()
            .or_else(|| Instant::now().checked_add(self.default))
        else {
            return next.run();
        };
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
pub struct RetryBehavior {
    policy: RetryPolicy,
}

impl RetryBehavior {
    /// Retries by `policy`.
    pub fn new(policy: RetryPolicy) -> Self {
        RetryBehavior { policy }
    }
}

impl Behavior for RetryBehavior {
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
pub struct MetricsBehavior<M> {
    metrics: M,
}

impl<M: Metrics + 'static> MetricsBehavior<M> {
    /// Records into `metrics`.
    pub fn new(metrics: M) -> Self {
        MetricsBehavior { metrics }
    }
}

impl<M: Metrics + 'static> Behavior for MetricsBehavior<M> {
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

/// Runs the rest of the pipeline in a `tracing` span `flext.dispatch`, named and
/// attributed after the OpenTelemetry messaging conventions: `otel.name` is
/// `"{kind} {type}"` (`"command account.open"`), `messaging.system` is `flext`,
/// `messaging.operation.type` is `process`, `messaging.operation.name` the kind,
/// `messaging.destination.name` the message type, `messaging.message.id` and
/// `messaging.message.conversation_id` the message and correlation ids, and, when it ends,
/// `flext.outcome`, and on failure `error.type` (the error's reason), `flext.error.code`
/// and `otel.status_code = ERROR`.
///
/// Trace context: when the context carries a `traceparent` (given by hand, or, for an
/// follow-up command, the one stored with the event that caused it) and a
/// [`Propagator`](flext_ports::Propagator) is installed, the span continues that trace when
/// no span is current (a current span is the better parent).
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingBehavior;

impl Behavior for TracingBehavior {
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        ctx: &'a Context,
        next: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        let kind = message.kind().as_str();
        let span = tracing::info_span!(
            "flext.dispatch",
            otel.name = tracing::field::Empty,
            otel.kind = "internal",
            otel.status_code = tracing::field::Empty,
            messaging.system = "flext",
            messaging.operation.type = "process",
            messaging.operation.name = kind,
            messaging.destination.name = message.name(),
            messaging.message.id = %ctx.message_id(),
            messaging.message.conversation_id = %ctx.correlation_id(),
            flext.causation_id = tracing::field::Empty,
            flext.outcome = tracing::field::Empty,
            flext.error.code = tracing::field::Empty,
            error.type = tracing::field::Empty,
        );
        if !span.is_disabled() {
            span.record(
                "otel.name",
                tracing::field::display(format_args!("{kind} {}", message.name())),
            );
            if let Some(causation) = ctx.causation_id() {
                span.record("flext.causation_id", tracing::field::display(causation));
            }
            if let Some(tp) = ctx.traceparent() {
                flext_ports::trace::continue_trace(&span, tp, false);
            }
        }
        let recorder = span.clone();
        Box::pin(
            async move {
                let result = next.run().await;
                match &result {
                    Ok(_) => {
                        recorder.record("flext.outcome", "ok");
                    }
                    Err(e) => {
                        recorder.record("flext.outcome", "error");
                        recorder.record("otel.status_code", "ERROR");
                        recorder.record("flext.error.code", e.code().as_str());
                        recorder.record("error.type", e.reason());
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}
