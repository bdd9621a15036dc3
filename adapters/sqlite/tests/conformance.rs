//! The event-store conformance suite on a SQLite file.
flext_testkit::event_store_conformance!(flext_testkit::harness::SqliteHarness);
