//! The checked-in Rust code of `flext.bridge.v1` is what prost-build generates from the
//! committed `.proto` (compiled by protox, pure Rust: no `protoc` anywhere), and the
//! committed descriptor set (`tests/golden/v1/bridge.fds`, which the Python interop test
//! loads instead of running `protoc`) is the `.proto`'s. `FLEXT_BLESS=1` rewrites both.

mod common;

use prost::Message;

#[test]
fn generated_code_and_descriptor_set_match_the_proto() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(["flext/bridge/v1/bridge.proto"], [root.join("proto")])
        .expect("the .proto compiles");
    common::check_golden("bridge.fds", &fds.encode_to_vec());

    let out = std::env::temp_dir().join(format!("flext-bridge-codegen-{}", std::process::id()));
    std::fs::create_dir_all(&out).expect("temp dir");
    let mut config = prost_build::Config::new();
    config.btree_map(["."]).out_dir(&out);
    config.compile_fds(fds).expect("prost-build generates");
    let generated = std::fs::read_to_string(out.join("flext.bridge.v1.rs")).expect("generated");
    let committed_path = root.join("src/proto/flext.bridge.v1.rs");
    if std::env::var("FLEXT_BLESS").as_deref() == Ok("1") {
        std::fs::write(&committed_path, &generated).expect("write");
    }
    let committed = std::fs::read_to_string(&committed_path).expect("committed");
    let _ = std::fs::remove_dir_all(&out);
    assert!(
        generated == committed,
        "src/proto/flext.bridge.v1.rs is stale: the .proto changed; run with FLEXT_BLESS=1"
    );
}
