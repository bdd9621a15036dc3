//! Python reads and writes the v1 contract: a Python program using the `msgpack` and
//! `protobuf` packages from PyPI (pinned in `tests/python/requirements.txt`, installed into
//! a virtual environment under the target directory on first run) decodes every golden
//! file, checks each field, and re-encodes; the Rust side decodes Python's bytes back to
//! equal envelopes. A missing `python3` or an unreachable PyPI fails the test: it does not
//! skip.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use flext_bridge::{msgpack, protobuf};

fn run(cmd: &mut Command) {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{shown}: {e} (is python3 installed?)"));
    assert!(
        out.status.success(),
        "{shown} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

/// The virtual environment's python, created and provisioned once.
fn python() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let requirements = manifest.join("tests/python/requirements.txt");
    let pinned = std::fs::read_to_string(&requirements).expect("requirements");
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("flext-bridge-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join("requirements.installed");
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(pinned.as_str()) {
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&requirements));
        std::fs::write(&stamp, &pinned).expect("stamp");
    }
    python
}

#[test]
fn python_decodes_every_golden_file_and_rust_reads_python_back() {
    let python = python();
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("python-out-{}", std::process::id()));
    run(Command::new(&python)
        .arg(manifest.join("tests/python/interop.py"))
        .arg(common::golden_dir())
        .arg(&out));
    for (name, envelope) in common::cases() {
        let mp = std::fs::read(out.join(format!("{name}.msgpack"))).expect("python's msgpack");
        assert_eq!(
            msgpack::decode(&mp).expect("decode python msgpack"),
            envelope,
            "{name}.msgpack"
        );
        let pb = std::fs::read(out.join(format!("{name}.pb"))).expect("python's protobuf");
        assert_eq!(
            protobuf::decode(&pb).expect("decode python protobuf"),
            envelope,
            "{name}.pb"
        );
    }
    let _ = std::fs::remove_dir_all(&out);
}
