//! A future that turns a panic while polling into flext's internal error.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use flext_domain::Error;

pin_project_lite::pin_project! {
    /// Polls `inner`; a panic in a poll becomes `Internal`/`HANDLER_PANICKED` naming `what`.
    /// The panic's text goes to the log (`tracing::error!`), never into the error: errors
    /// reach clients (problem details, the bridge), and a panic message may quote data.
    pub(crate) struct CatchPanic<F> {
        #[pin]
        inner: F,
        what: std::borrow::Cow<'static, str>,
        reason: &'static str,
    }
}

impl<F> CatchPanic<F> {
    pub(crate) fn new(inner: F, what: &'static str) -> Self {
        CatchPanic {
            inner,
            what: what.into(),
            reason: "HANDLER_PANICKED",
        }
    }

    /// The same for a projection (or another named runner): reason `reason`.
    pub(crate) fn named(inner: F, what: String, reason: &'static str) -> Self {
        CatchPanic {
            inner,
            what: what.into(),
            reason,
        }
    }
}

impl<T, F: Future<Output = Result<T, Error>>> Future for CatchPanic<F> {
    type Output = Result<T, Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let what = this.what.as_ref();
        let inner = this.inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(poll) => poll,
            Err(panic) => {
                let message = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a non-string panic payload".to_owned());
                tracing::error!(handler = %what, panic = %message, "a handler panicked");
                Poll::Ready(Err(Error::internal(
                    *this.reason,
                    format!("the handler of {what} panicked (the panic is in the log)"),
                )
                .with_detail("message_type", what)))
            }
        }
    }
}
