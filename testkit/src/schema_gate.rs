//! The schema gate: one golden stored payload per event type and schema version, kept in a
//! directory beside the tests, each of which must still decode (through the codec and its
//! upcasters) to the current event type. An event type whose serde shape changed without
//! a new schema version and an upcaster fails the gate before it reaches a store that
//! holds the old payloads.
//!
//! The layout is `<dir>/<event type>/v<schema version>.<ext>` holding the payload bytes as
//! the codec wrote them (`json` for the JSON codec). Golden payloads are recorded from
//! sample events when `FLEXT_SCHEMA_GATE=record` is set (never under `CI`), and a golden
//! file once written is never rewritten: it is the old shape the current code must read.
//!
//! ```no_run
//! use flext_ports::JsonCodec;
//! use flext_testkit::schema_gate::SchemaGate;
//! # #[derive(serde::Serialize, serde::Deserialize)] struct Opened { owner: String }
//! # impl flext_domain::DomainEvent for Opened { fn event_type(&self) -> &'static str { "account.opened" } }
//!
//! let report = SchemaGate::new("tests/golden/events")
//!     .check(&JsonCodec::new(), &[Opened { owner: "ann".into() }])
//!     .unwrap_or_else(|failures| panic!("{failures}"));
//! assert!(report.checked >= 1);
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use flext_domain::{DomainEvent, EventRef, StreamId, StreamVersion};
use flext_ports::EventCodec;

/// The golden payloads of one set of event types (see the [module](self)).
#[derive(Debug, Clone)]
pub struct SchemaGate {
    dir: PathBuf,
    extension: String,
    record: bool,
}

/// What a passing gate checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateReport {
    /// Golden payloads decoded.
    pub checked: usize,
    /// Golden payloads written this run (recording).
    pub recorded: Vec<PathBuf>,
}

/// Why a gate failed: every golden payload that no longer decodes, and every current
/// event type and version without a golden payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateFailures(pub Vec<String>);

impl fmt::Display for GateFailures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "the schema gate failed:")?;
        for failure in &self.0 {
            writeln!(f, "- {failure}")?;
        }
        Ok(())
    }
}

impl std::error::Error for GateFailures {}

impl SchemaGate {
    /// The gate over the golden payloads in `dir` (JSON payloads). It records missing
    /// ones when the environment variable `FLEXT_SCHEMA_GATE` is `record` and `CI` is not
    /// set.
    pub fn new(dir: impl Into<PathBuf>) -> SchemaGate {
        let record = std::env::var("FLEXT_SCHEMA_GATE").is_ok_and(|v| v == "record")
            && std::env::var_os("CI").is_none();
        SchemaGate {
            dir: dir.into(),
            extension: "json".to_owned(),
            record,
        }
    }

    /// The file extension of the golden payloads (`json` by default; `msgpack` for a
    /// MessagePack codec).
    #[must_use]
    pub fn extension(mut self, extension: impl Into<String>) -> SchemaGate {
        self.extension = extension.into();
        self
    }

    /// Whether missing golden payloads are written (overrides the environment).
    #[must_use]
    pub fn recording(mut self, record: bool) -> SchemaGate {
        self.record = record;
        self
    }

    fn path(&self, event_type: &str, version: u32) -> PathBuf {
        self.dir
            .join(event_type)
            .join(format!("v{version}.{}", self.extension))
    }

    /// Decodes every golden payload in the directory with `codec` into `E`, and makes sure
    /// each type and schema version of `samples` (one or more events of every current
    /// shape) has a golden payload, recording it when recording. `Err` lists every
    /// failure.
    pub fn check<E, C>(&self, codec: &C, samples: &[E]) -> Result<GateReport, GateFailures>
    where
        E: DomainEvent,
        C: EventCodec<E>,
    {
        let mut failures = Vec::new();
        let mut recorded = Vec::new();
        for sample in samples {
            let path = self.path(sample.event_type(), sample.schema_version());
            if path.exists() {
                continue;
            }
            if !self.record {
                failures.push(format!(
                    "{} v{} has no golden payload ({}): record it with FLEXT_SCHEMA_GATE=record",
                    sample.event_type(),
                    sample.schema_version(),
                    path.display()
                ));
                continue;
            }
            let written = codec
                .encode(sample)
                .map_err(|e| e.to_string())
                .and_then(|bytes| {
                    std::fs::create_dir_all(path.parent().unwrap_or(Path::new(".")))
                        .and_then(|()| std::fs::write(&path, &bytes))
                        .map_err(|e| e.to_string())
                });
            match written {
                Ok(()) => recorded.push(path),
                Err(e) => failures.push(format!("{}: cannot be recorded: {e}", path.display())),
            }
        }
        let golden = match self.golden() {
            Ok(g) => g,
            Err(e) => {
                failures.push(e);
                Vec::new()
            }
        };
        let stream = StreamId::new("schema-gate").map_err(|e| GateFailures(vec![e.to_string()]))?;
        for (event_type, version, path) in &golden {
            let payload = match std::fs::read(path) {
                Ok(p) => p,
                Err(e) => {
                    failures.push(format!("{}: cannot be read: {e}", path.display()));
                    continue;
                }
            };
            let event = EventRef {
                stream_id: &stream,
                stream_version: StreamVersion(1),
                event_type,
                schema_version: *version,
                payload: &payload,
            };
            if let Err(e) = codec.decode(event) {
                failures.push(format!(
                    "{event_type} v{version} ({}) no longer decodes: {} ({}): {}",
                    path.display(),
                    e.code(),
                    e.reason(),
                    e.message()
                ));
            }
        }
        if failures.is_empty() {
            Ok(GateReport {
                checked: golden.len(),
                recorded,
            })
        } else {
            Err(GateFailures(failures))
        }
    }

    /// Every golden payload: (event type, schema version, path), sorted.
    fn golden(&self) -> Result<Vec<(String, u32, PathBuf)>, String> {
        let mut out = Vec::new();
        let Ok(types) = std::fs::read_dir(&self.dir) else {
            return Ok(out);
        };
        for entry in types {
            let entry = entry.map_err(|e| format!("{}: {e}", self.dir.display()))?;
            let Some(event_type) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !entry.path().is_dir() {
                continue;
            }
            let files = std::fs::read_dir(entry.path())
                .map_err(|e| format!("{}: {e}", entry.path().display()))?;
            for file in files {
                let file = file.map_err(|e| format!("{}: {e}", entry.path().display()))?;
                let name = file.file_name();
                let Some(version) = name
                    .to_str()
                    .and_then(|n| n.strip_suffix(&format!(".{}", self.extension)))
                    .and_then(|n| n.strip_prefix('v'))
                    .and_then(|v| v.parse::<u32>().ok())
                else {
                    return Err(format!(
                        "{}: not a golden payload (v<schema version>.{})",
                        file.path().display(),
                        self.extension
                    ));
                };
                out.push((event_type.clone(), version, file.path()));
            }
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flext_ports::{JsonCodec, Upcasters};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct OpenedV1 {
        owner: String,
    }
    impl DomainEvent for OpenedV1 {
        fn event_type(&self) -> &'static str {
            "account.opened"
        }
    }

    /// The same type with a field renamed and no new schema version.
    #[derive(Serialize, Deserialize)]
    struct OpenedRenamed {
        holder: String,
    }
    impl DomainEvent for OpenedRenamed {
        fn event_type(&self) -> &'static str {
            "account.opened"
        }
    }

    /// The renamed type done right: schema version 2 and an upcaster from 1.
    #[derive(Serialize, Deserialize)]
    struct OpenedV2 {
        holder: String,
    }
    impl DomainEvent for OpenedV2 {
        fn event_type(&self) -> &'static str {
            "account.opened"
        }
        fn schema_version(&self) -> u32 {
            2
        }
    }

    fn dir() -> PathBuf {
        std::env::temp_dir().join(format!("flext-gate-{}", uuid::Uuid::now_v7().simple()))
    }

    #[test]
    fn a_missing_golden_payload_fails_unless_recording() {
        let dir = dir();
        let sample = [OpenedV1 {
            owner: "ann".into(),
        }];
        let failed = SchemaGate::new(&dir)
            .recording(false)
            .check(&JsonCodec::new(), &sample)
            .expect_err("no golden payload");
        assert!(
            failed
                .to_string()
                .contains("account.opened v1 has no golden payload")
        );
        let report = SchemaGate::new(&dir)
            .recording(true)
            .check(&JsonCodec::new(), &sample)
            .expect("recorded");
        assert_eq!(
            report.recorded,
            [dir.join("account.opened").join("v1.json")]
        );
        assert_eq!(report.checked, 1);
        let again = SchemaGate::new(&dir)
            .recording(false)
            .check(&JsonCodec::new(), &sample)
            .expect("passes");
        assert!(again.recorded.is_empty());
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_changed_shape_without_a_new_version_fails_and_an_upcaster_mends_it() {
        let dir = dir();
        SchemaGate::new(&dir)
            .recording(true)
            .check(
                &JsonCodec::new(),
                &[OpenedV1 {
                    owner: "ann".into(),
                }],
            )
            .expect("recorded");
        let failed = SchemaGate::new(&dir)
            .recording(false)
            .check::<OpenedRenamed, _>(&JsonCodec::new(), &[])
            .expect_err("the old payload no longer decodes");
        assert!(
            failed.to_string().contains("account.opened v1") && failed.0.len() == 1,
            "{failed}"
        );
        let upcasters = Upcasters::new()
            .with("account.opened", 1, |mut v| {
                let owner = v["owner"].take();
                Ok(serde_json::json!({ "holder": owner }))
            })
            .expect("upcaster");
        let report = SchemaGate::new(&dir)
            .recording(true)
            .check(
                &JsonCodec::with_upcasters(upcasters),
                &[OpenedV2 {
                    holder: "ann".into(),
                }],
            )
            .expect("v1 upcast, v2 recorded");
        assert_eq!(report.checked, 2);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_stray_file_is_named() {
        let dir = dir();
        std::fs::create_dir_all(dir.join("account.opened")).expect("dir");
        std::fs::write(dir.join("account.opened").join("notes.txt"), "x").expect("write");
        let failed = SchemaGate::new(&dir)
            .check::<OpenedV1, _>(&JsonCodec::new(), &[])
            .expect_err("stray");
        assert!(failed.to_string().contains("notes.txt"), "{failed}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
