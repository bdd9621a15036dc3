//! The event-store conformance suite on PostgreSQL (a fresh schema per test).
flext_testkit::event_store_conformance!(flext_testkit::harness::PgHarness);
