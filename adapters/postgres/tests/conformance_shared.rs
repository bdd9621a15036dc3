//! The whole conformance suite on tenants in shared tables, kept apart by row-level
//! security alone.
flext_testkit::event_store_conformance!(flext_testkit::harness::PgSharedHarness);
