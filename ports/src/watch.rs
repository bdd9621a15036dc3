//! Append notifications: how a reader that caught up learns that it should read again.
//!
//! A store owns an [`AppendSignal`] and pulses it after every commit that appended events
//! (in process) or when a notification from another process arrives (PostgreSQL's
//! LISTEN/NOTIFY). Readers hold [`AppendWatcher`]s. A watcher remembers the last pulse it
//! saw, so a pulse between two waits is never lost: make the watcher, read, and wait only
//! when the read found nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

#[derive(Debug)]
struct State {
    /// Bumped by every pulse.
    generation: u64,
    /// Whether pulses can be relied on: false while a store's notification connection is
    /// down, when readers must poll.
    live: bool,
    wakers: Vec<Waker>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a waker panicked; the counter is still right.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The sending side: pulsed by a store whenever events may have been appended.
/// Clones pulse the same watchers.
#[derive(Debug, Clone)]
pub struct AppendSignal {
    shared: Arc<Shared>,
}

impl Default for AppendSignal {
    fn default() -> Self {
        AppendSignal::new()
    }
}

impl AppendSignal {
    /// A live signal that has not pulsed.
    pub fn new() -> Self {
        AppendSignal {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    generation: 0,
                    live: true,
                    wakers: Vec::new(),
                }),
            }),
        }
    }

    /// Wakes every watcher: events may have been appended.
    pub fn pulse(&self) {
        let wakers = {
            let mut s = self.shared.lock();
            s.generation = s.generation.wrapping_add(1);
            std::mem::take(&mut s.wakers)
        };
        for w in wakers {
            w.wake();
        }
    }

    /// Says whether pulses can be relied on (and pulses, so waiting readers re-read and
    /// learn the new mode). A store sets it false while its notifications are down.
    pub fn set_live(&self, live: bool) {
        let changed = {
            let mut s = self.shared.lock();
            let changed = s.live != live;
            s.live = live;
            changed
        };
        if changed {
            self.pulse();
        }
    }

    /// Whether pulses can be relied on now.
    pub fn is_live(&self) -> bool {
        self.shared.lock().live
    }

    /// A watcher that has seen every pulse so far.
    pub fn watcher(&self) -> AppendWatcher {
        let seen = self.shared.lock().generation;
        AppendWatcher {
            shared: Arc::clone(&self.shared),
            seen,
        }
    }
}

/// The receiving side: make one, read, and wait with [`AppendWatcher::changed`] only when
/// the read found nothing; a pulse that came between two waits is not lost.
#[derive(Debug)]
pub struct AppendWatcher {
    shared: Arc<Shared>,
    seen: u64,
}

impl AppendWatcher {
    /// Resolves at the first pulse this watcher has not seen (at once if one came since
    /// the last wait), and marks it seen.
    pub fn changed(&mut self) -> Changed<'_> {
        Changed { watcher: self }
    }

    /// Whether pulses can be relied on now; when not, a reader polls.
    pub fn is_live(&self) -> bool {
        self.shared.lock().live
    }
}

/// The future of [`AppendWatcher::changed`].
#[derive(Debug)]
pub struct Changed<'a> {
    watcher: &'a mut AppendWatcher,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut s = this.watcher.shared.lock();
        if s.generation != this.watcher.seen {
            this.watcher.seen = s.generation;
            return Poll::Ready(());
        }
        if !s.wakers.iter().any(|w| w.will_wake(cx.waker())) {
            s.wakers.push(cx.waker().clone());
        }
        Poll::Pending
    }
}

/// A store that tells readers when events may have been appended.
pub trait WatchAppends {
    /// A watcher that has seen every append committed so far.
    fn watch_appends(&self) -> AppendWatcher;
}

impl<S: WatchAppends> WatchAppends for Arc<S> {
    fn watch_appends(&self) -> AppendWatcher {
        (**self).watch_appends()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    struct Count(std::sync::atomic::AtomicUsize);
    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn a_pulse_between_waits_is_not_lost_and_wakes_the_waiter() {
        let signal = AppendSignal::new();
        let mut w = signal.watcher();
        let count = Arc::new(Count(0.into()));
        let waker = Waker::from(Arc::clone(&count));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut w.changed()).poll(&mut cx).is_pending());
        signal.pulse();
        assert_eq!(count.0.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(Pin::new(&mut w.changed()).poll(&mut cx).is_ready());
        // Seen: the next wait is pending until the next pulse, which may come before it.
        assert!(Pin::new(&mut w.changed()).poll(&mut cx).is_pending());
        signal.pulse();
        signal.pulse();
        assert!(Pin::new(&mut w.changed()).poll(&mut cx).is_ready());
        assert!(Pin::new(&mut w.changed()).poll(&mut cx).is_pending());
    }

    #[test]
    fn going_not_live_pulses_and_is_visible() {
        let signal = AppendSignal::new();
        let mut w = signal.watcher();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        signal.set_live(false);
        assert!(!w.is_live());
        assert!(Pin::new(&mut w.changed()).poll(&mut cx).is_ready());
        signal.set_live(false);
        assert!(Pin::new(&mut w.changed()).poll(&mut cx).is_pending());
    }
}
