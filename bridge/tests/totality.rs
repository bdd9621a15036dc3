//! Decoding is total: random bytes, truncated and mutated golden files, depth bombs and
//! hostile length prefixes give a typed error (or an envelope), never a panic, and never
//! an allocation the input does not back.

mod common;

use flext_bridge::{msgpack, protobuf};
use flext_domain::ErrorCode;
use proptest::prelude::*;

fn goldens() -> Vec<Vec<u8>> {
    let dir = common::golden_dir();
    let mut out = Vec::new();
    for (name, _) in common::cases() {
        for ext in ["msgpack", "pb"] {
            out.push(std::fs::read(dir.join(format!("{name}.{ext}"))).expect("golden"));
        }
    }
    out
}

fn decode_all(bytes: &[u8]) {
    for result in [msgpack::decode(bytes), protobuf::decode(bytes)] {
        if let Err(e) = result {
            assert!(
                matches!(
                    e.code(),
                    ErrorCode::InvalidArgument
                        | ErrorCode::FailedPrecondition
                        | ErrorCode::ResourceExhausted
                ),
                "{e}"
            );
        }
    }
    let _ = msgpack::decode_result::<serde_json::Value>(bytes);
    let _ = protobuf::decode_message::<protobuf::v1::Value>(bytes, "flext.bridge.v1.Value");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        decode_all(&bytes);
    }

    #[test]
    fn truncated_and_mutated_goldens_never_panic(
        which in 0usize..14,
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let goldens = goldens();
        let mut bytes = goldens[which % goldens.len()].clone();
        for (at, b) in flips {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        let end = cut.index(bytes.len() + 1);
        decode_all(&bytes[..end]);
        decode_all(&bytes);
    }
}

#[test]
fn every_strict_prefix_of_a_golden_file_is_refused_or_read() {
    for g in goldens() {
        for end in 0..g.len() {
            decode_all(&g[..end]);
        }
    }
}

#[test]
fn depth_bombs_are_refused_not_recursed() {
    // MessagePack: {"contract_major":1,"ok":{"value":[[[[...]]]]}} 100,000 deep.
    let mut mp = vec![0x82];
    mp.extend(rmp_serde::to_vec(&"contract_major").expect("key"));
    mp.push(0x01);
    mp.extend(rmp_serde::to_vec(&"ok").expect("key"));
    mp.push(0x81);
    mp.extend(rmp_serde::to_vec(&"value").expect("key"));
    mp.extend(std::iter::repeat_n(0x91u8, 100_000));
    mp.push(0xc0);
    let e = msgpack::decode(&mp).unwrap_err();
    assert_eq!(e.reason(), "MALFORMED_ENVELOPE");
    // Protobuf: Value { list { items { list { ... } } } } nested 10,000 deep.
    let mut pb: Vec<u8> = Vec::new();
    for _ in 0..10_000 {
        let mut outer = vec![0x42]; // Value.list (field 8, length-delimited)
        let mut list = vec![0x0a]; // ListValue.items (field 1)
        prost::encoding::encode_varint(pb.len() as u64, &mut list);
        list.extend_from_slice(&pb);
        prost::encoding::encode_varint(list.len() as u64, &mut outer);
        outer.extend_from_slice(&list);
        pb = outer;
    }
    let e = protobuf::decode(&pb).unwrap_err();
    assert_eq!(e.reason(), "MALFORMED_ENVELOPE");
}

#[test]
fn hostile_length_prefixes_allocate_nothing_they_do_not_have() {
    // A bin32 claiming 4 GiB, an array32 claiming 4 billion elements, a map32 likewise.
    for body in [
        vec![0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],
        vec![0xdd, 0xff, 0xff, 0xff, 0xff, 0x00],
        vec![0xdf, 0xff, 0xff, 0xff, 0xff, 0x00],
    ] {
        let mut mp = vec![0x82];
        mp.extend(rmp_serde::to_vec(&"contract_major").expect("key"));
        mp.push(0x01);
        mp.extend(rmp_serde::to_vec(&"ok").expect("key"));
        mp.push(0x81);
        mp.extend(rmp_serde::to_vec(&"value").expect("key"));
        mp.extend(body);
        assert_eq!(
            msgpack::decode(&mp).unwrap_err().reason(),
            "MALFORMED_ENVELOPE"
        );
    }
    // Protobuf: a length-delimited field claiming 2^62 bytes.
    let pb = [0x1a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x3f];
    assert_eq!(
        protobuf::decode(&pb).unwrap_err().reason(),
        "MALFORMED_ENVELOPE"
    );
    assert!(protobuf::decode_message::<protobuf::v1::Value>(&pb, "x").is_err());
}

#[test]
fn oversized_input_is_refused_before_parsing() {
    let big = vec![0u8; flext_bridge::MAX_ENVELOPE_BYTES + 1];
    assert_eq!(
        msgpack::decode(&big).unwrap_err().code(),
        ErrorCode::ResourceExhausted
    );
    assert_eq!(
        protobuf::decode(&big).unwrap_err().reason(),
        "ENVELOPE_TOO_LARGE"
    );
}
