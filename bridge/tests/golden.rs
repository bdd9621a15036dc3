//! The v1 bytes are pinned: every canonical envelope encodes to exactly its committed
//! golden file in both formats, and every golden file decodes to the envelope. An
//! accidental change of bytes fails here. `FLEXT_BLESS=1` rewrites the files (a contract
//! change: say so in the commit).

mod common;

use flext_bridge::{Envelope, Outcome, msgpack, protobuf};

#[test]
fn v1_golden_files_match_both_ways() {
    let mut expected = serde_json::Map::new();
    for (name, envelope) in common::cases() {
        let mp = msgpack::encode(&envelope).expect("encode");
        common::check_golden(&format!("{name}.msgpack"), &mp);
        let pb = protobuf::encode(&envelope);
        common::check_golden(&format!("{name}.pb"), &pb);
        let dir = common::golden_dir();
        let mp_file = std::fs::read(dir.join(format!("{name}.msgpack"))).expect("read");
        let pb_file = std::fs::read(dir.join(format!("{name}.pb"))).expect("read");
        assert_eq!(
            msgpack::decode(&mp_file).expect("decode msgpack"),
            envelope,
            "{name}"
        );
        assert_eq!(
            protobuf::decode(&pb_file).expect("decode protobuf"),
            envelope,
            "{name}"
        );
        expected.insert(name.to_owned(), common::view(&envelope));
    }
    let expected = serde_json::to_vec_pretty(&serde_json::Value::Object(expected)).expect("json");
    common::check_golden("expected.json", &expected);
}

#[test]
fn the_wire_never_carries_secrets_sources_or_type_names() {
    for (name, envelope) in common::cases() {
        for bytes in [
            msgpack::encode(&envelope).expect("encode"),
            protobuf::encode(&envelope),
        ] {
            let text = String::from_utf8_lossy(&bytes);
            for leak in [
                "hunter2",
                "abc\"",
                "connection reset",
                "flext_domain",
                "std::io",
                "Error {",
            ] {
                assert!(!text.contains(leak), "{name} leaks {leak:?}");
            }
        }
        if let Outcome::Error(s) = &envelope.outcome
            && name == "error_details"
        {
            assert_eq!(
                s.details["password"],
                flext_bridge::Value::from("[REDACTED]")
            );
        }
    }
}

#[test]
fn readers_ignore_unknown_fields_and_refuse_a_newer_major() {
    // MessagePack: an extra key at every level is ignored.
    let mut doc: serde_json::Value = serde_json::json!({
        "contract_major": 1, "contract_minor": 7, "future": [1, 2],
        "ok": {"value": 5, "also_future": true},
    });
    let bytes = rmp_serde::to_vec_named(&doc).expect("encode");
    let e = msgpack::decode(&bytes).expect("a later minor reads");
    assert_eq!((e.contract_major, e.contract_minor), (1, 7));
    assert_eq!(
        e.outcome,
        Outcome::Ok(flext_bridge::Payload::Value(flext_bridge::Value::Int(5)))
    );
    doc["contract_major"] = 2.into();
    let err = msgpack::decode(&rmp_serde::to_vec_named(&doc).expect("encode")).unwrap_err();
    assert_eq!(err.reason(), "UNSUPPORTED_CONTRACT");
    assert!(
        err.message().contains("2.7") && err.message().contains("1.x"),
        "{err}"
    );

    // Protobuf: an unknown field (tag 99) is skipped; major 2 refused.
    let mut pb = protobuf::encode(&Envelope::ok_value(flext_bridge::Value::Int(5)));
    pb.extend_from_slice(&[0x98, 0x06, 0x01]); // field 99, varint 1
    assert!(protobuf::decode(&pb).is_ok());
    let mut newer = Envelope::ok_value(flext_bridge::Value::Int(5));
    newer.contract_major = 2;
    let err = protobuf::decode(&protobuf::encode(&newer)).unwrap_err();
    assert_eq!(err.reason(), "UNSUPPORTED_CONTRACT");
    assert_eq!(err.detail("supported_major"), Some(&1.into()));
}

#[test]
fn an_error_round_trips_to_the_domain_error() {
    for (name, envelope) in common::cases() {
        let Outcome::Error(status) = &envelope.outcome else {
            continue;
        };
        let back = protobuf::decode(&protobuf::encode(&envelope))
            .expect("decode")
            .into_result::<serde_json::Value>()
            .unwrap_err();
        assert_eq!(back.code().as_i32(), status.code, "{name}");
        assert_eq!(back.reason(), status.reason);
        assert_eq!(back.message(), status.message);
        assert_eq!(back.field_violations().len(), status.field_violations.len());
        assert_eq!(
            back.correlation_id()
                .map(|c| c.to_string())
                .unwrap_or_default(),
            status.correlation_id
        );
    }
}
