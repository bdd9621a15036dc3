//! Each built-in behavior alone, against a stub of the rest of the pipeline.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use flext_application::{
    Behavior, BoxFuture, Message, MetricsBehavior, Next, Reply, RetryBehavior, RetryPolicy,
    TimeoutBehavior, TracingBehavior, ValidationBehavior,
};
use flext_domain::{Error, ErrorCode, Validation};
use flext_ports::{Command, Context, Labels, Metrics};

#[derive(Debug, Clone)]
struct Transfer {
    from: String,
    amount: i64,
}

impl Command for Transfer {
    type Output = u32;
    const NAME: &'static str = "money.transfer";
    fn validate(&self, v: &mut Validation) {
        v.ensure(
            !self.from.is_empty(),
            "from",
            "REQUIRED",
            "must not be empty",
        );
        v.ensure_code(
            self.amount > 0,
            "amount",
            ErrorCode::OutOfRange,
            "NOT_POSITIVE",
            "must be > 0",
        );
    }
}

/// Runs `behavior` with a stub next that counts calls and answers with `answer(call)`.
async fn run<B: Behavior>(
    behavior: &B,
    command: &Transfer,
    ctx: &Context,
    answer: impl Fn(u32) -> Result<u32, Error> + Send + Sync,
) -> (Result<u32, Error>, u32) {
    let calls = AtomicU32::new(0);
    let stub = || -> BoxFuture<'_, Result<Reply, Error>> {
        let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
        let result = answer(n).map(Reply::new);
        Box::pin(async move { result })
    };
    let message = Message::of_command(command);
    let result = behavior
        .handle(message, ctx, Next::handler(message, ctx, &stub))
        .await
        .map(|reply| *reply.downcast_ref::<u32>().expect("a u32 reply"));
    (result, calls.load(Ordering::SeqCst))
}

fn ok_transfer() -> Transfer {
    Transfer {
        from: "a".into(),
        amount: 5,
    }
}

#[tokio::test]
async fn validation_returns_every_violation_with_its_code_and_skips_the_handler() {
    let bad = Transfer {
        from: String::new(),
        amount: -1,
    };
    let (result, calls) = run(&ValidationBehavior, &bad, &Context::new(), Ok).await;
    let err = result.unwrap_err();
    assert_eq!(calls, 0);
    assert_eq!(err.reason(), "VALIDATION_FAILED");
    let got: Vec<_> = err
        .field_violations()
        .iter()
        .map(|v| (v.field.as_str(), v.code))
        .collect();
    assert_eq!(
        got,
        [
            ("from", ErrorCode::InvalidArgument),
            ("amount", ErrorCode::OutOfRange)
        ]
    );
    let (ok, calls) = run(&ValidationBehavior, &ok_transfer(), &Context::new(), Ok).await;
    assert_eq!((ok.unwrap(), calls), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn timeout_uses_the_context_deadline_then_the_default() {
    let slow = |layer: TimeoutBehavior, ctx: Context| async move {
        let transfer = ok_transfer();
        let stub = || -> BoxFuture<'_, Result<Reply, Error>> {
            Box::pin(async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(Reply::new(1u32))
            })
        };
        let message = Message::of_command(&transfer);
        layer
            .handle(message, &ctx, Next::handler(message, &ctx, &stub))
            .await
            .map(|_| ())
    };
    let err = slow(
        TimeoutBehavior::new(Duration::from_secs(60)),
        Context::new().with_timeout(Duration::from_secs(1)),
    )
    .await
    .unwrap_err();
    assert_eq!(err.code(), ErrorCode::DeadlineExceeded);
    let err = slow(TimeoutBehavior::new(Duration::from_secs(2)), Context::new())
        .await
        .unwrap_err();
    assert_eq!(err.reason(), "DEADLINE_EXCEEDED");
    assert!(
        slow(
            TimeoutBehavior::new(Duration::from_secs(10)),
            Context::new()
        )
        .await
        .is_ok()
    );
    // A timeout too long to be an instant is no deadline, not a panic.
    assert!(
        slow(TimeoutBehavior::new(Duration::MAX), Context::new())
            .await
            .is_ok()
    );
    assert!(
        slow(
            TimeoutBehavior::new(Duration::MAX),
            Context::new().with_timeout(Duration::MAX)
        )
        .await
        .is_ok()
    );
}

#[tokio::test(start_paused = true)]
async fn retry_runs_again_on_conflicts_only_and_gives_up_after_the_policy() {
    let conflict = || Error::conflict("WRONG_EXPECTED_VERSION", "lost a race");
    let layer = RetryBehavior::new(RetryPolicy {
        attempts: 4,
        ..RetryPolicy::default()
    });
    let (result, calls) = run(&layer, &ok_transfer(), &Context::new(), |n| {
        if n < 3 { Err(conflict()) } else { Ok(n) }
    })
    .await;
    assert_eq!((result.unwrap(), calls), (3, 3));
    let (result, calls) = run(&layer, &ok_transfer(), &Context::new(), |_| Err(conflict())).await;
    assert_eq!(
        (result.unwrap_err().code(), calls),
        (ErrorCode::CONFLICT, 4)
    );
    let (result, calls) = run(&layer, &ok_transfer(), &Context::new(), |_| {
        Err(Error::not_found("NOPE", "missing"))
    })
    .await;
    assert_eq!(
        (result.unwrap_err().code(), calls),
        (ErrorCode::NotFound, 1)
    );
}

#[derive(Default)]
struct Captured(Mutex<Vec<(String, String)>>);
impl Metrics for Captured {
    fn count(&self, name: &'static str, value: u64, labels: Labels<'_>) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.0
            .lock()
            .expect("lock")
            .push((format!("{name}+{value}"), labels.join(",")));
    }
    fn observe(&self, name: &'static str, value: f64, labels: Labels<'_>) {
        assert!(value >= 0.0);
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.0
            .lock()
            .expect("lock")
            .push((name.to_owned(), labels.join(",")));
    }
}

#[tokio::test]
async fn metrics_count_and_time_each_dispatch_by_type_and_outcome() {
    let captured = Arc::new(Captured::default());
    let layer = MetricsBehavior::new(captured.clone());
    run(&layer, &ok_transfer(), &Context::new(), Ok)
        .await
        .0
        .unwrap();
    run(&layer, &ok_transfer(), &Context::new(), |_| {
        Err(Error::conflict("X", "x"))
    })
    .await
    .0
    .unwrap_err();
    let points = captured.0.lock().expect("lock").clone();
    let ok = "kind=command,message_type=money.transfer,outcome=ok".to_owned();
    let aborted = "kind=command,message_type=money.transfer,outcome=ABORTED".to_owned();
    assert_eq!(
        points,
        [
            ("flext.dispatch.count+1".to_owned(), ok.clone()),
            ("flext.dispatch.duration".to_owned(), ok),
            ("flext.dispatch.count+1".to_owned(), aborted.clone()),
            ("flext.dispatch.duration".to_owned(), aborted),
        ]
    );
}

mod capture {
    //! A tracing subscriber that keeps every span's name and fields.
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    pub(crate) type SpanLog = Vec<(String, BTreeMap<String, String>)>;
    #[derive(Default, Clone)]
    pub(crate) struct Spans(pub(crate) Arc<Mutex<SpanLog>>);
    struct Fields<'a>(&'a mut BTreeMap<String, String>);
    impl Visit for Fields<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }
    pub(crate) struct Capture {
        spans: Spans,
    }
    impl Capture {
        pub(crate) fn new(spans: Spans) -> Self {
            Capture { spans }
        }
    }
    impl Subscriber for Capture {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let mut fields = BTreeMap::new();
            span.record(&mut Fields(&mut fields));
            let mut spans = self.spans.0.lock().expect("lock");
            spans.push((span.metadata().name().to_owned(), fields));
            Id::from_u64(spans.len() as u64)
        }
        fn record(&self, span: &Id, values: &Record<'_>) {
            let mut spans = self.spans.0.lock().expect("lock");
            let entry = &mut spans[span.into_u64() as usize - 1];
            values.record(&mut Fields(&mut entry.1));
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
}

#[tokio::test]
async fn tracing_opens_a_span_with_ids_outcome_and_error_code() {
    let spans = capture::Spans::default();
    let _guard = tracing::subscriber::set_default(capture::Capture::new(spans.clone()));
    let root = Context::new();
    let child = root.child();
    run(&TracingBehavior, &ok_transfer(), &child, |_| {
        Err(Error::conflict("WRONG_EXPECTED_VERSION", "x"))
    })
    .await
    .0
    .unwrap_err();
    let spans = spans.0.lock().expect("lock").clone();
    assert_eq!(spans.len(), 1);
    let (name, fields) = &spans[0];
    assert_eq!(name, "flext.dispatch");
    assert_eq!(fields["otel.name"], "command money.transfer");
    assert_eq!(fields["messaging.destination.name"], "money.transfer");
    assert_eq!(fields["messaging.operation.name"], "command");
    assert_eq!(
        fields["messaging.message.conversation_id"],
        root.correlation_id().to_string()
    );
    assert_eq!(fields["flext.causation_id"], root.message_id().to_string());
    assert_eq!(
        fields["messaging.message.id"],
        child.message_id().to_string()
    );
    assert_eq!(fields["flext.outcome"], "error");
    assert_eq!(fields["otel.status_code"], "ERROR");
    assert_eq!(fields["flext.error.code"], "ABORTED");
    assert_eq!(fields["error.type"], "WRONG_EXPECTED_VERSION");
}
