//! flext's event-store conformance suite: every adapter runs the same generic cases, so
//! swapping one store for another changes nothing a user can observe.
//!
//! The suite also holds the ownership contract: exclusive leases with growing epochs,
//! checkpoints fenced by them, membership of instances.
//!
//! An adapter's `tests/conformance.rs` is one line:
//!
//! ```text
//! flext_testkit::event_store_conformance!(flext_testkit::harness::MemoryHarness);
//! ```
//!
//! The macro expands to one `#[test]` per case in [`cases`], each on a fresh store made by
//! the [`Harness`]. A harness also provides the two hooks the suite cannot get through the
//! port: holding an append's transaction open (gap safety) and corrupting a stored row.
//!
//! [`cancel`] drops a future at its 1st, 2nd, ... poll (cancellation-safety cases);
//! [`proxy::FaultProxy`] sits between a store and PostgreSQL and cuts, delays or
//! half-opens its connections (fault tests).
//!
//! | feature | harness |
//! |---|---|
//! | `memory` | [`harness::MemoryHarness`] |
//! | `sqlite` | [`harness::SqliteHarness`] (a fresh file per test) |
//! | `postgres` | [`harness::PgHarness`] (a fresh schema per test in `DATABASE_URL`) |

use std::future::Future;

use flext_domain::{Error, ExpectedVersion, NewEvent, StreamId, StreamVersion};
use flext_ports::{
    AppendOutcome, CheckpointStore, EventStore, IdempotencyStore, ProjectionStore, SnapshotStore,
};

pub mod cancel;
pub mod cases;
pub mod dcb_cases;
pub mod erasure_cases;
pub mod harness;
pub mod lifecycle_cases;
pub mod operator;
pub mod proxy;
pub mod schema_gate;
pub mod tenancy_cases;

/// What the conformance suite needs from an adapter.
pub trait Harness: Send + Sync + Sized + 'static {
    /// The store under test.
    type Store: EventStore
        + SnapshotStore
        + IdempotencyStore
        + CheckpointStore
        + ProjectionStore
        + flext_ports::ScheduleStore
        + flext_ports::ProcessStore
        + flext_ports::JobStore
        + flext_ports::InboxStore
        + flext_ports::OutboxStore
        + flext_ports::DcbStore
        + flext_ports::StreamLifecycle
        + flext_ports::KeyStore
        + flext_ports::WatchAppends
        + Clone
        + 'static;
    /// An append whose transaction is held open until [`Held::commit`].
    type Held: Held;
    /// The stores of tenants, each confined to its tenant (fresh per harness, removed by
    /// [`Harness::cleanup`]).
    type Tenants: flext_ports::TenantStores<Store = Self::Store>;

    /// Whether appends to different streams wait for each other (SQLite has one writer),
    /// so a held append blocks every other append until it commits.
    const SERIALIZED_WRITERS: bool;

    /// A harness around a fresh, empty store.
    fn fresh() -> impl Future<Output = Self> + Send;

    /// The store (clones share data).
    fn store(&self) -> Self::Store;

    /// The tenants' stores (clones share them).
    fn tenants(&self) -> Self::Tenants;

    /// Appends in a transaction that stays open until the returned handle commits.
    fn hold_append(
        &self,
        stream: &StreamId,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<Self::Held, Error>> + Send;

    /// Appends `first` to `a`, waits `pause`, then appends `second` to `b`, all in one
    /// transaction of the store's own (`PgWriteTransaction`, `SqliteWriteTransaction`;
    /// memory: two appends): a writer whose transaction wrote before it appends. Errors
    /// are returned as they come (a retryable conflict rolls the transaction back).
    fn append_after_a_write(
        &self,
        a: &StreamId,
        first: Vec<NewEvent>,
        b: &StreamId,
        second: Vec<NewEvent>,
        pause: std::time::Duration,
    ) -> impl Future<Output = Result<(), Error>> + Send;

    /// In one transaction of the store's own (memory: plain appends): appends one event
    /// to `stream` (`NoStream`), then one more with `NoStream` again, which must be
    /// refused, then one with `Exact(1)`, and commits. Returns the refusal and the outcome
    /// of the rest.
    fn refused_in_a_transaction(
        &self,
        stream: &StreamId,
    ) -> impl Future<Output = (Error, Result<(), Error>)> + Send;

    /// Begins a transaction of the store's own, appends `events` to `stream` in it and
    /// commits, as one future (memory: a plain append).
    fn append_in_transaction(
        &self,
        stream: &StreamId,
        events: Vec<NewEvent>,
    ) -> impl Future<Output = Result<AppendOutcome, Error>> + Send;

    /// Overwrites the payload of one stored event with bytes no codec decodes.
    fn corrupt_payload(
        &self,
        stream: &StreamId,
        version: StreamVersion,
    ) -> impl Future<Output = ()> + Send;

    /// Overwrites the stored metadata of one event with garbage, behind the store's back;
    /// `false` if this store keeps no metadata it could fail to read (memory).
    fn corrupt_metadata(
        &self,
        stream: &StreamId,
        version: StreamVersion,
    ) -> impl Future<Output = bool> + Send;

    /// Removes what `fresh` created (a schema, a file).
    fn cleanup(self) -> impl Future<Output = ()> + Send;
}

/// An append held open by [`Harness::hold_append`].
pub trait Held: Send + 'static {
    /// Commits the held append.
    fn commit(self) -> impl Future<Output = Result<AppendOutcome, Error>> + Send;
}

/// Runs one case on a fresh harness in a multi-threaded runtime, then cleans up.
pub fn run_case<H, F, Fut>(case: F)
where
    H: Harness,
    F: FnOnce(H) -> Fut,
    Fut: Future<Output = H>,
{
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(async {
        let harness = H::fresh().await;
        let harness = case(harness).await;
        harness.cleanup().await;
    });
}

/// Expands to one `#[test]` per conformance case for the given [`Harness`] type.
#[macro_export]
macro_rules! event_store_conformance {
    ($harness:ty) => {
        $crate::__conformance_cases!(
            $harness;
            no_stream_creates_the_stream,
            no_stream_on_existing_stream_conflicts,
            exact_version_matching_succeeds,
            exact_version_behind_conflicts_with_values,
            exact_version_ahead_conflicts_and_leaves_no_gap,
            exact_zero_behaves_as_no_stream,
            stream_exists_on_missing_stream_conflicts,
            stream_exists_on_existing_stream_appends,
            any_appends_to_missing_and_existing_streams,
            multi_event_append_is_consecutive,
            failed_multi_event_append_leaves_nothing,
            duplicate_ids_in_one_append_are_invalid,
            empty_append_is_invalid,
            idempotent_retry_with_no_stream,
            idempotent_retry_with_exact_after_stream_moved_on,
            idempotent_retry_with_stream_exists,
            reused_id_with_other_payload_is_refused,
            reused_id_in_another_stream_is_refused,
            retry_with_any_is_refused_not_duplicated,
            read_stream_forward_pages,
            read_stream_backward_pages,
            missing_stream_reads_empty_at_version_zero,
            replay_stream_feeds_what_read_stream_returns,
            read_all_is_in_position_order_and_pages,
            read_all_past_the_end_is_empty,
            recorded_events_keep_every_field,
            large_append_round_trips_in_order,
            concurrent_exact_writers_on_one_stream,
            concurrent_writers_on_distinct_streams_with_tailing_reader,
            read_all_is_gap_safe_with_a_held_transaction,
            hostile_stream_ids_are_stored_literally,
            hostile_types_and_headers_are_stored_literally,
            corrupted_payload_is_a_typed_error_and_the_rest_stays_readable,
            corrupted_metadata_is_a_typed_error_and_the_rest_stays_readable,
            snapshots_keep_the_latest,
            older_snapshot_does_not_replace_newer,
            idempotency_keeps_the_first_output,
            idempotency_keeps_the_first_error,
            idempotency_reports_in_progress_and_takes_over_stale_claims,
            idempotency_release_lets_a_retry_run,
            checkpoints_keep_the_last_saved_position_per_name,
            correlation_query_returns_one_business_action,
            leases_are_exclusive_and_epochs_only_grow,
            a_stale_epoch_cannot_commit,
            a_checkpoint_moves_back_only_in_a_rebuild,
            instances_announce_lapse_and_leave,
            an_owned_checkpoint_is_not_written_unfenced,
            numeric_fields_of_an_append_keep_their_bounds,
            a_streams_versions_follow_the_global_order,
            a_refused_append_in_a_transaction_sees_its_writes,
            every_operation_survives_cancellation_at_every_poll,
            idempotency_records_are_purged_after_their_retention,
            read_all_of_types_keeps_its_types_and_says_how_far_it_looked,
            read_all_of_types_is_gap_safe_with_a_held_transaction,
            a_filtered_tailing_reader_misses_nothing,
            scheduled_messages_are_replaced_cancelled_and_delivered_by_key,
            process_state_commits_with_the_checkpoint_or_not_at_all,
            jobs_are_claimed_once_retried_dead_lettered_redriven_and_cancelled,
            control_requests_are_taken_once_and_requeued_from_a_lost_owner,
            inbox_records_make_a_redelivery_a_duplicate,
            outbox_messages_commit_with_the_transaction_in_order,
            tags_come_back_from_every_read,
            bad_tags_and_queries_are_refused_by_name,
            read_matching_selects_by_type_tag_and_both,
            read_matching_pages_and_says_how_far_it_looked,
            read_matching_is_gap_safe_with_a_held_transaction,
            a_condition_fails_only_for_a_matching_event_after_its_position,
            conditions_on_types_only_and_on_every_event_hold_and_fail,
            a_conditional_append_keeps_expected_versions_and_idempotent_retries,
            eight_racing_writers_on_one_condition_exactly_one_wins,
            racing_writers_with_disjoint_conditions_all_win,
            plain_and_transactional_appends_cannot_slip_under_a_condition,
            a_transaction_that_wrote_first_cannot_slip_under_a_condition,
            a_tenant_cannot_read_or_append_to_anothers_stream,
            a_tenant_cannot_replay_or_read_all_of_anothers_events,
            a_tenants_append_condition_ignores_anothers_events,
            a_tenant_cannot_load_anothers_snapshot,
            a_tenant_cannot_see_anothers_idempotency_records,
            a_tenants_checkpoints_and_leases_are_its_own,
            a_tenants_subscription_receives_only_its_own_events,
            tenants_are_validated_and_taken_from_the_request,
            two_tenants_under_random_operations_see_only_their_own,
            a_deleted_stream_reads_as_deleted_and_stays_in_read_all,
            deleting_checks_the_expectation_and_refuses_absent_streams,
            appending_to_a_deleted_stream_revives_it_with_continued_numbering,
            a_tombstoned_stream_refuses_appends_forever_and_leaves_read_all,
            truncating_removes_events_before_a_version_and_keeps_numbering,
            a_truncated_stream_loads_from_its_snapshot,
            archived_events_read_through_and_leave_read_all,
            retention_policies_keep_the_newest_and_archive_on_request,
            appends_racing_deletes_land_before_or_after_them,
            data_keys_are_created_once_and_forgotten_with_their_dependents,
        );
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($harness:ty; $($case:ident),* $(,)?) => {
        $(
            #[test]
            fn $case() {
                $crate::run_case::<$harness, _, _>($crate::cases::$case::<$harness>);
            }
        )*
    };
}
