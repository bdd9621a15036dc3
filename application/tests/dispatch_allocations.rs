//! A dispatch with no behaviors allocates once (the handler's boxed future); counted with
//! a counting global allocator in this test binary alone (the one place flext allows
//! `unsafe`: a global allocator cannot be written without it).
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context as TaskContext, Poll, Waker};

use flext_application::{Pipeline, Registry};
use flext_domain::Error;
use flext_ports::{Command, CommandHandler, Context};

struct Counting;
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::SeqCst);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[derive(Clone)]
struct Noop;
impl Command for Noop {
    type Output = ();
    const NAME: &'static str = "noop";
}
struct Handler;
impl CommandHandler<Noop> for Handler {
    async fn handle(&self, _: Noop, _: &Context) -> Result<(), Error> {
        Ok(())
    }
}

fn ready<F: Future>(f: F) -> F::Output {
    let mut cx = TaskContext::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the handler is ready at once"),
    }
}

#[test]
fn a_dispatch_without_behaviors_allocates_once() {
    let bus = Registry::new()
        .command::<Noop, _>(Handler)
        .command_bus(Pipeline::new())
        .expect("bus");
    let ctx = Context::new();
    ready(bus.dispatch(Noop, &ctx)).expect("warm-up");
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..100 {
        ready(bus.dispatch(Noop, &ctx)).expect("dispatch");
    }
    let per_dispatch = (ALLOCATIONS.load(Ordering::SeqCst) - before) as f64 / 100.0;
    assert_eq!(per_dispatch, 1.0);
}
