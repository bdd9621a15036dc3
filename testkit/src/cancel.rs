//! Cancellation at every await point: a future polled at most N times and then dropped,
//! for N = 1, 2, ... until it completes, as a caller that gives up (a deadline, a client
//! that disconnects) would drop it.

use std::future::Future;
use std::pin::pin;
use std::task::Poll;

/// Polls `future` at most `polls` times: its output if it completed within them, `None`
/// if it was still pending (it is then dropped, wherever it was).
pub async fn poll_at_most<F: Future>(future: F, polls: usize) -> Option<F::Output> {
    let mut future = pin!(future);
    let mut left = polls;
    std::future::poll_fn(move |cx| match future.as_mut().poll(cx) {
        Poll::Ready(out) => Poll::Ready(Some(out)),
        Poll::Pending => {
            left = left.saturating_sub(1);
            if left == 0 {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        }
    })
    .await
}

/// Runs the operation `op` (made afresh for each try) dropped at its 1st, 2nd, ... poll
/// until it completes, calling `after` after every dropped try (to check the store still
/// works and lost nothing). Returns the completed output and how many times it was
/// dropped (its cancellation points). Panics past 10,000 points.
pub async fn at_every_poll<T, Op, Fut, After, AfterFut>(mut op: Op, mut after: After) -> (T, usize)
where
    Op: FnMut() -> Fut,
    Fut: Future<Output = T>,
    After: FnMut(usize) -> AfterFut,
    AfterFut: Future<Output = ()>,
{
    for polls in 1..=10_000 {
        match poll_at_most(op(), polls).await {
            Some(out) => return (out, polls - 1),
            None => after(polls).await,
        }
    }
    panic!("the operation did not complete within 10,000 polls");
}
