//! The Protobuf reader refuses what this contract does not define instead of reading it
//! as something else: a contract major beyond 32 bits (the generated field would truncate
//! 2^32 + 1 to 1) and a value whose case a later contract would add (it would read as
//! null).
#![cfg(feature = "protobuf")]

use flext_bridge::protobuf::{self, v1};
use prost::Message as _;

/// The varint encoding of `v`.
fn varint(mut v: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (v & 0x7f) as u8;
        v >>= 7;
        if v == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

fn ok_envelope(major: u32, value: v1::Value) -> v1::Envelope {
    v1::Envelope {
        contract_major: major,
        contract_minor: 0,
        metadata: Default::default(),
        outcome: Some(v1::envelope::Outcome::Ok(v1::Payload {
            body: Some(v1::payload::Body::Value(value)),
        })),
    }
}

#[test]
fn a_contract_major_beyond_32_bits_is_refused_not_truncated() {
    let one = v1::Value {
        kind: Some(v1::value::Kind::Int(7)),
    };
    // Field 1 left out (major 0), then written by hand as 2^32 + 1.
    let mut bytes = vec![0x08];
    bytes.extend(varint((1u64 << 32) + 1));
    bytes.extend(ok_envelope(0, one.clone()).encode_to_vec());
    let e = protobuf::decode(&bytes).expect_err("not contract 1");
    assert_eq!(e.reason(), "UNSUPPORTED_CONTRACT", "{e}");
    let e = protobuf::decode_message::<v1::Value>(&bytes, "flext.bridge.v1.Value")
        .expect_err("not contract 1");
    assert_eq!(e.reason(), "UNSUPPORTED_CONTRACT", "{e}");
    // The same envelope under major 1 reads.
    assert!(protobuf::decode(&ok_envelope(1, one).encode_to_vec()).is_ok());
}

#[test]
fn a_value_with_an_unknown_case_is_refused_not_read_as_null() {
    // A later contract's case: field 20 of Value, unknown to v1.
    let mut value = vec![0xa0, 0x01]; // key: field 20, varint
    value.extend(varint(5));
    let known = ok_envelope(1, v1::Value { kind: None }).encode_to_vec();
    // The envelope written by hand around that value.
    let mut payload = vec![0x12]; // Payload.body value = field 2, length-delimited
    payload.extend(varint(value.len() as u64));
    payload.extend(&value);
    let mut envelope = vec![0x08, 0x01]; // major 1
    envelope.push(0x1a); // outcome ok = field 3, length-delimited
    envelope.extend(varint(payload.len() as u64));
    envelope.extend(&payload);
    let e = protobuf::decode(&envelope).expect_err("an unknown case");
    assert!(e.message().contains("no case"), "{e}");
    // An empty value (no case at all) is refused the same way.
    assert!(protobuf::decode(&known).is_err());
}
