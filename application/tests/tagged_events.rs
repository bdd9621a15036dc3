//! Events an aggregate records carry the tags their type declares
//! (`#[event(tag = "...{field}...")]`), through the repository into every store, where
//! tagged reads find them across streams.

use flext::DomainEvent;
use flext::application::Repository;
use flext::memory::InMemoryEventStore;
use flext::ports::{DcbStore, EventQuery, QueryItem};
use flext::prelude::*;
use flext::sqlite::SqliteEventStore;
use flext::{EventMetadata, Id, Position};
use serde::{Deserialize, Serialize};

#[derive(Debug, Default)]
struct Enrolment {
    done: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, DomainEvent)]
enum EnrolmentEvent {
    #[event(
        name = "student.enrolled",
        tag = "course:{course}",
        tag = "student:{student}"
    )]
    Enrolled { course: String, student: u32 },
    #[event(name = "student.noted")]
    Noted,
}

impl Aggregate for Enrolment {
    const TYPE: &'static str = "enrolment";
    type Event = EnrolmentEvent;
    fn apply(&mut self, _: &EnrolmentEvent) {
        self.done = true;
    }
}

async fn enrol_three<S>(store: S)
where
    S: DcbStore + flext::ports::SnapshotStore + Clone + Send + Sync + 'static,
{
    let repo = Repository::<Enrolment, _>::new(store.clone());
    for (course, student) in [("algebra", 1), ("algebra", 2), ("poetry", 1)] {
        repo.execute_with_metadata(Id::new(), &EventMetadata::default(), |_| {
            Ok(vec![
                EnrolmentEvent::Enrolled {
                    course: course.into(),
                    student,
                },
                EnrolmentEvent::Noted,
            ])
        })
        .await
        .expect("enrol");
    }
    let algebra = EventQuery::of(QueryItem::tags(["course:algebra"]));
    let page = store
        .read_matching(&algebra, Position::START, 10)
        .await
        .expect("read");
    let tags: Vec<Vec<String>> = page.events.iter().map(|e| e.tags.clone()).collect();
    assert_eq!(
        tags,
        [
            vec!["course:algebra".to_owned(), "student:1".to_owned()],
            vec!["course:algebra".to_owned(), "student:2".to_owned()],
        ]
    );
    let student_one =
        EventQuery::of(QueryItem::types(["student.enrolled"]).and_tags(["student:1"]));
    let page = store
        .read_matching(&student_one, Position::START, 10)
        .await
        .expect("read");
    assert_eq!(page.events.len(), 2);
    let all = store.read_all(Position::START, 10).await.expect("read all");
    assert!(
        all.iter()
            .filter(|e| e.event_type == "student.noted")
            .all(|e| e.tags.is_empty())
    );
}

#[tokio::test]
async fn derived_tags_reach_the_memory_store() {
    enrol_three(InMemoryEventStore::new()).await;
}

#[tokio::test]
async fn derived_tags_reach_the_sqlite_store() {
    let path = std::env::temp_dir().join(format!("flext-tagged-{}.db", uuid::Uuid::now_v7()));
    let store = SqliteEventStore::open(&path).await.expect("open");
    enrol_three(store.clone()).await;
    store.close().await.expect("close");
    let _ = std::fs::remove_file(&path);
}
