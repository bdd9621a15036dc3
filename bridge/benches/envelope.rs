//! Envelope encode and decode in both formats, next to plain rmp-serde and prost on the
//! same value in the same run: what the contract costs over writing the value bare.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use flext_bridge::{Envelope, Value, msgpack, protobuf};
use serde::{Deserialize, Serialize};

/// A typical query result.
#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
struct Statement {
    #[prost(string, tag = "1")]
    account: String,
    #[prost(sint64, tag = "2")]
    balance: i64,
    #[prost(string, tag = "3")]
    currency: String,
    #[prost(bool, tag = "4")]
    open: bool,
    #[prost(message, repeated, tag = "5")]
    lines: Vec<Line>,
}

#[derive(Clone, PartialEq, Serialize, Deserialize, prost::Message)]
struct Line {
    #[prost(string, tag = "1")]
    memo: String,
    #[prost(sint64, tag = "2")]
    amount: i64,
    #[prost(uint64, tag = "3")]
    position: u64,
}

fn statement() -> Statement {
    Statement {
        account: "acc-0192-3b4c".into(),
        balance: 125_000,
        currency: "EUR".into(),
        open: true,
        lines: (0..20)
            .map(|i| Line {
                memo: format!("transfer {i}"),
                amount: 1_000 + i,
                position: 1 << 40 | i as u64,
            })
            .collect(),
    }
}

fn as_value(s: &Statement) -> Value {
    let mut m = BTreeMap::new();
    m.insert("account".to_owned(), Value::from(s.account.as_str()));
    m.insert("balance".to_owned(), Value::Int(s.balance));
    m.insert("currency".to_owned(), Value::from(s.currency.as_str()));
    m.insert("open".to_owned(), Value::Bool(s.open));
    m.insert(
        "lines".to_owned(),
        Value::List(
            s.lines
                .iter()
                .map(|l| {
                    let mut m = BTreeMap::new();
                    m.insert("memo".to_owned(), Value::from(l.memo.as_str()));
                    m.insert("amount".to_owned(), Value::Int(l.amount));
                    m.insert("position".to_owned(), Value::from(l.position));
                    Value::Map(m)
                })
                .collect(),
        ),
    );
    Value::Map(m)
}

fn bench(c: &mut Criterion) {
    let plain = statement();
    let envelope = Envelope::ok_value(as_value(&plain)).with_metadata("position", "1099511627796");
    let plain_mp = rmp_serde::to_vec_named(&plain).expect("encode");
    let plain_pb = prost::Message::encode_to_vec(&plain);
    let env_mp = msgpack::encode(&envelope).expect("encode");
    let env_pb = protobuf::encode(&envelope);
    println!(
        "sizes: plain msgpack {} B, envelope msgpack {} B, plain protobuf {} B, envelope protobuf {} B",
        plain_mp.len(),
        env_mp.len(),
        plain_pb.len(),
        env_pb.len()
    );

    let metadata: BTreeMap<String, String> =
        [("position".to_owned(), "1099511627796".to_owned())].into();
    let typed_mp = msgpack::encode_ok(&plain, &metadata).expect("encode");
    let typed_pb = protobuf::encode_message(&plain, "bank.v1.Statement", &metadata);

    let mut g = c.benchmark_group("msgpack");
    g.bench_function("encode/plain rmp-serde", |b| {
        b.iter(|| rmp_serde::to_vec_named(black_box(&plain)))
    });
    g.bench_function("encode/envelope typed (encode_ok)", |b| {
        b.iter(|| msgpack::encode_ok(black_box(&plain), black_box(&metadata)))
    });
    g.bench_function("encode/envelope Value tree", |b| {
        b.iter(|| msgpack::encode(black_box(&envelope)))
    });
    g.bench_function("decode/plain rmp-serde", |b| {
        b.iter(|| rmp_serde::from_slice::<Statement>(black_box(&plain_mp)))
    });
    g.bench_function("decode/envelope typed (decode_result)", |b| {
        b.iter(|| msgpack::decode_result::<Statement>(black_box(&typed_mp)))
    });
    g.bench_function("decode/envelope Value tree", |b| {
        b.iter(|| msgpack::decode(black_box(&env_mp)))
    });
    g.finish();

    let mut g = c.benchmark_group("protobuf");
    g.bench_function("encode/plain prost", |b| {
        b.iter(|| prost::Message::encode_to_vec(black_box(&plain)))
    });
    g.bench_function("encode/envelope typed (encode_message)", |b| {
        b.iter(|| {
            protobuf::encode_message(black_box(&plain), "bank.v1.Statement", black_box(&metadata))
        })
    });
    g.bench_function("encode/envelope Value tree", |b| {
        b.iter(|| protobuf::encode(black_box(&envelope)))
    });
    g.bench_function("decode/plain prost", |b| {
        b.iter(|| <Statement as prost::Message>::decode(black_box(plain_pb.as_slice())))
    });
    g.bench_function("decode/envelope typed (decode_message)", |b| {
        b.iter(|| protobuf::decode_message::<Statement>(black_box(&typed_pb), "bank.v1.Statement"))
    });
    g.bench_function("decode/envelope Value tree", |b| {
        b.iter(|| protobuf::decode(black_box(&env_pb)))
    });
    g.finish();
}

criterion_group!(benches, bench);
#[allow(missing_docs)]
mod docs {}
criterion_main!(benches);
