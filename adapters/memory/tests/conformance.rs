//! The event-store conformance suite on the in-memory store.
flext_testkit::event_store_conformance!(flext_testkit::harness::MemoryHarness);
