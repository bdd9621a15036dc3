//! The bridge's metrics through the metrics port: a known sequence of encodes and decodes
//! produces exactly these points.

use std::sync::Mutex;

use flext_application::BridgeMetrics;
use flext_bridge::{Envelope, Value, msgpack, protobuf};
use flext_ports::{Labels, Metrics};

#[derive(Default)]
struct Recorded(Mutex<Vec<String>>);

impl Metrics for Recorded {
    fn count(&self, name: &'static str, value: u64, labels: Labels<'_>) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        self.0
            .lock()
            .expect("lock")
            .push(format!("count {name} {value} {}", l.join(",")));
    }
    fn observe(&self, name: &'static str, value: f64, labels: Labels<'_>) {
        let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let shown = if name == "flext.bridge.duration" {
            assert!(value >= 0.0, "{value}");
            "t".to_owned()
        } else {
            value.to_string()
        };
        self.0
            .lock()
            .expect("lock")
            .push(format!("observe {name} {shown} {}", l.join(",")));
    }
}

#[test]
fn encodes_and_decodes_are_counted_sized_and_timed_by_format_and_outcome() {
    let recorded = std::sync::Arc::new(Recorded::default());
    let metrics = BridgeMetrics::new(recorded.clone());
    let envelope = Envelope::ok_value(Value::Int(7));
    let mp = msgpack::encode_observed(&envelope, &metrics).expect("encode");
    msgpack::decode_observed(&mp, &metrics).expect("decode");
    assert!(msgpack::decode_observed(&[0xc1], &metrics).is_err());
    let pb = protobuf::encode_observed(&envelope, &metrics);
    protobuf::decode_observed(&pb, &metrics).expect("decode");
    let got = recorded.0.lock().expect("lock").clone();
    let (m, p) = (mp.len(), pb.len());
    assert_eq!(
        got,
        vec![
            "count flext.bridge.messages 1 operation=encode,format=msgpack,outcome=ok".to_owned(),
            format!("observe flext.bridge.bytes {m} operation=encode,format=msgpack"),
            "observe flext.bridge.duration t operation=encode,format=msgpack".to_owned(),
            "count flext.bridge.messages 1 operation=decode,format=msgpack,outcome=ok".to_owned(),
            format!("observe flext.bridge.bytes {m} operation=decode,format=msgpack"),
            "observe flext.bridge.duration t operation=decode,format=msgpack".to_owned(),
            "count flext.bridge.messages 1 operation=decode,format=msgpack,outcome=error"
                .to_owned(),
            "observe flext.bridge.bytes 1 operation=decode,format=msgpack".to_owned(),
            "observe flext.bridge.duration t operation=decode,format=msgpack".to_owned(),
            "count flext.bridge.messages 1 operation=encode,format=protobuf,outcome=ok".to_owned(),
            format!("observe flext.bridge.bytes {p} operation=encode,format=protobuf"),
            "observe flext.bridge.duration t operation=encode,format=protobuf".to_owned(),
            "count flext.bridge.messages 1 operation=decode,format=protobuf,outcome=ok".to_owned(),
            format!("observe flext.bridge.bytes {p} operation=decode,format=protobuf"),
            "observe flext.bridge.duration t operation=decode,format=protobuf".to_owned(),
        ]
    );
}
