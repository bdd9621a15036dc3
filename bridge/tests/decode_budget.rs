//! The decoding budget: an input made of the smallest values there are (a MessagePack nil
//! is one byte, a decoded value 32) is refused before it is built, and whatever a decoder
//! does accept allocates within a small multiple of its size. The allocator of this test
//! binary counts every allocation, so the file holds one test.

// A counting global allocator needs `unsafe` (it forwards to the system allocator
// unchanged); nothing else here does.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use flext_bridge::{DecodeLimits, Envelope, Value, msgpack, protobuf};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = CURRENT.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call goes to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::SeqCst);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            grew(new_size - layout.size());
        } else {
            CURRENT.fetch_sub(layout.size() - new_size, Ordering::SeqCst);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// What `decode` returns, and the most it had allocated at once beyond what was live
/// before it ran.
fn peak_of<T>(decode: impl FnOnce() -> T) -> (T, usize) {
    let before = CURRENT.load(Ordering::SeqCst);
    PEAK.store(before, Ordering::SeqCst);
    let out = decode();
    (out, PEAK.load(Ordering::SeqCst) - before)
}

/// An envelope whose value is a list of `n` copies of `item`.
fn list_of(item: Value, n: usize) -> Envelope {
    Envelope::ok_value(Value::List(vec![item; n]))
}

/// The most a decoder may allocate for `len` bytes of input: what the budget's doc
/// promises at the default limits.
fn bound(len: usize) -> usize {
    20 * len + (320 << 10)
}

/// The largest count in 1..`above` that `fits` accepts (it accepts 1 and refuses
/// `above`, and accepts every count below one it accepts), by bisection.
fn largest_accepted(fits: impl Fn(usize) -> bool, above: usize, what: &str) -> usize {
    let (mut lo, mut hi) = (1usize, above);
    assert!(fits(lo) && !fits(hi), "{what}");
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    lo
}

type Decoder = fn(&[u8], &DecodeLimits) -> Result<Envelope, flext_domain::Error>;
type Encoder = fn(&Envelope) -> Vec<u8>;

#[test]
fn what_is_decoded_stays_within_a_small_multiple_of_the_input() {
    let formats: [(&str, Encoder, Decoder); 2] = [
        (
            "MessagePack",
            |e| msgpack::encode(e).expect("encodes"),
            msgpack::decode_with,
        ),
        ("Protobuf", protobuf::encode, protobuf::decode_with),
    ];
    let smallest = [
        ("nil", Value::Null),
        ("false", Value::Bool(false)),
        ("0", Value::Int(0)),
        ("\"\"", Value::String(String::new())),
        ("[]", Value::List(Vec::new())),
        ("{}", Value::Map(Default::default())),
        ("[nil]", Value::List(vec![Value::Null])),
    ];
    let limits = DecodeLimits::default();
    for (format, encode, decode) in formats {
        for (name, item) in &smallest {
            // Half a million of them: refused (over the node budget), before anything is built.
            let hostile = encode(&list_of(item.clone(), 1 << 19));
            let (result, peak) = peak_of(|| decode(&hostile, &limits));
            let refused = result.err().map(|e| e.reason().to_owned());
            assert_eq!(
                refused.as_deref(),
                Some("ENVELOPE_TOO_COMPLEX"),
                "{format} {name}: half a million tiny values are over the budget"
            );
            assert!(
                peak < 64 << 10,
                "{format} {name}: refusing {} bytes allocated {peak}",
                hostile.len()
            );

            // As many as the budget lets through (found by bisection): decoded within
            // the bound.
            let fits = |n: usize| decode(&encode(&list_of(item.clone(), n)), &limits).is_ok();
            // Small inputs buy a few thousand nodes: 2^15 is refused, and the bisection
            // stays among small encodes.
            let n = largest_accepted(fits, 1 << 15, &format!("{format} {name}"));
            let accepted = encode(&list_of(item.clone(), n));
            let (result, peak) = peak_of(|| decode(&accepted, &limits));
            let envelope = result.unwrap_or_else(|e| panic!("{format} {name} x {n}: {e}"));
            assert!(
                envelope == list_of(item.clone(), n),
                "{format} {name} x {n}"
            );
            drop(envelope);
            println!(
                "{format:<11} {name:<5} x {n:>7}: {:>8} bytes, peak {:>9} ({:.1}x)",
                accepted.len(),
                peak,
                peak as f64 / accepted.len() as f64
            );
            assert!(
                peak <= bound(accepted.len()),
                "{format} {name} x {n}: {} bytes allocated {peak}, over {}",
                accepted.len(),
                bound(accepted.len())
            );
        }
    }

    // The worst at scale: a megabyte of text buys a quarter of a million nodes more, all
    // spent on nils.
    for (format, encode, decode) in formats {
        let padded = |n: usize| {
            let mut items = vec![Value::String("x".repeat(1 << 20))];
            items.resize(n + 1, Value::Null);
            Envelope::ok_value(Value::List(items))
        };
        let fits = |n: usize| decode(&encode(&padded(n)), &limits).is_ok();
        let lo = largest_accepted(fits, 1 << 20, &format!("{format} padded"));
        let accepted = encode(&padded(lo));
        let (result, peak) = peak_of(|| decode(&accepted, &limits));
        assert!(result.is_ok_and(|e| e == padded(lo)), "{format} padded");
        println!(
            "{format:<11} 1 MiB + nil x {lo:>7}: {:>8} bytes, peak {:>9} ({:.1}x)",
            accepted.len(),
            peak,
            peak as f64 / accepted.len() as f64
        );
        assert!(peak <= bound(accepted.len()), "{format} padded: {peak}");
    }

    // The size limit is lower than before (8 MiB, not 64) and can be set.
    let big = msgpack::encode(&Envelope::ok_value(Value::Bytes(vec![7; 9 << 20]))).expect("enc");
    let refused = msgpack::decode(&big).err().map(|e| e.reason().to_owned());
    assert_eq!(refused.as_deref(), Some("ENVELOPE_TOO_LARGE"), "over 8 MiB");
    let roomy = DecodeLimits {
        max_bytes: 16 << 20,
        ..DecodeLimits::default()
    };
    assert!(msgpack::decode_with(&big, &roomy).is_ok());

    // A list that declares more items than the input holds is malformed at once.
    let liar = [0x81, 0xa2, b'o', b'k', 0xdd, 0xff, 0xff, 0xff, 0xff];
    let (result, peak) = peak_of(|| msgpack::decode(&liar));
    let refused = result.err().map(|e| e.reason().to_owned());
    assert_eq!(refused.as_deref(), Some("MALFORMED_ENVELOPE"), "a lie");
    assert!(peak < 4 << 10, "{peak}");
}
