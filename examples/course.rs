//! A course that admits at most N students, with no stream holding the rule: each
//! enrolment is its own stream, tagged with the course and the student, and every
//! decision reads the course's tag and appends on the condition that nothing enrolled
//! since (dynamic consistency boundaries, `flext::ports::DcbStore`).
//!
//! ```sh
//! cargo run --example course                         # memory and SQLite
//! DATABASE_URL=postgres://root@127.0.0.1:5432/test cargo run --example course
//! ```
//!
//! Eight tasks try to enrol 40 students each into a course of 30 seats, at once; a
//! student enrols once. The program prints how many were admitted, refused as full, and
//! how many decisions were taken again because another enrolment came first, and fails
//! if the course holds more than its seats or a student twice.

use std::sync::Arc;

use flext::memory::InMemoryEventStore;
use flext::ports::{AppendCondition, DcbStore, EventQuery, QueryItem};
use flext::postgres::PgEventStore;
use flext::sqlite::SqliteEventStore;
use flext::{Error, ErrorCode, EventId, ExpectedVersion, NewEvent, Position, StreamId};

const SEATS: usize = 30;
const TASKS: usize = 8;
const STUDENTS_PER_TASK: usize = 40;

/// What one attempt to enrol came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Admitted,
    Full,
    AlreadyEnrolled,
}

/// Reads what the decision needs (the course's enrolments and the student's), decides,
/// and appends on the condition that none of it changed; read and decide again when it
/// did.
async fn enrol<S: DcbStore>(
    store: &S,
    course: &str,
    student: &str,
    retries: &mut u64,
) -> Result<Outcome, Error> {
    let course_tag = format!("course:{course}");
    let student_tag = format!("student:{student}");
    let query = EventQuery::of(QueryItem::types(["student.enrolled"]).and_tags([&course_tag]));
    loop {
        let mut after = Position::START;
        let mut enrolled = Vec::new();
        loop {
            let page = store.read_matching(&query, after, 1_000).await?;
            let done = page.events.is_empty();
            enrolled.extend(page.events);
            after = page.through;
            if done {
                break;
            }
        }
        if enrolled.iter().any(|e| e.tags.contains(&student_tag)) {
            return Ok(Outcome::AlreadyEnrolled);
        }
        if enrolled.len() >= SEATS {
            return Ok(Outcome::Full);
        }
        let event = NewEvent::new(
            EventId::new(),
            "student.enrolled",
            format!(r#"{{"course":"{course}","student":"{student}"}}"#).into_bytes(),
        )
        .with_tags([course_tag.clone(), student_tag.clone()]);
        let stream = StreamId::new(format!("enrolment-{course}-{student}"))?;
        let condition = AppendCondition::new(query.clone(), after);
        match store
            .append_if(&stream, ExpectedVersion::Any, vec![event], &condition)
            .await
        {
            Ok(_) => return Ok(Outcome::Admitted),
            Err(e) if e.code() == ErrorCode::Aborted => *retries += 1,
            Err(e) => return Err(e),
        }
    }
}

async fn run<S: DcbStore + Clone + 'static>(name: &str, store: S) -> Result<(), Error> {
    let course = format!("{}", uuid::Uuid::now_v7().simple());
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let store = store.clone();
        let course = course.clone();
        tasks.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            let mut retries = 0;
            for s in 0..STUDENTS_PER_TASK {
                // Every other task also retries a student another task enrols.
                let student = if t % 2 == 1 && s % 4 == 0 {
                    format!("{}-{s}", t - 1)
                } else {
                    format!("{t}-{s}")
                };
                outcomes.push(enrol(&store, &course, &student, &mut retries).await?);
            }
            Ok::<_, Error>((outcomes, retries))
        }));
    }
    let (mut outcomes, mut retries) = (Vec::new(), 0);
    for t in tasks {
        let (o, r) = t
            .await
            .map_err(|e| Error::internal("TASK_FAILED", e.to_string()))??;
        outcomes.extend(o);
        retries += r;
    }
    let count = |o| outcomes.iter().filter(|x| **x == o).count();
    let query = EventQuery::of(QueryItem::tags([format!("course:{course}")]));
    let mut held = Vec::new();
    let mut after = Position::START;
    // PostgreSQL's gap-safe reads may hold the newest enrolments back for a moment.
    while held.len() < count(Outcome::Admitted) {
        let page = store.read_matching(&query, after, 1_000).await?;
        after = page.through;
        held.extend(page.events);
        tokio::task::yield_now().await;
    }
    let mut students: Vec<&String> = held.iter().flat_map(|e| &e.tags).collect();
    students.sort();
    students.dedup();
    println!(
        "{name:<10} admitted {:>3}, full {:>3}, already enrolled {:>3}, decisions retried {:>4}; \
         the course holds {} enrolments of {} distinct tags",
        count(Outcome::Admitted),
        count(Outcome::Full),
        count(Outcome::AlreadyEnrolled),
        retries,
        held.len(),
        students.len()
    );
    if held.len() != SEATS || count(Outcome::Admitted) != SEATS {
        return Err(Error::internal(
            "OVERBOOKED",
            format!("{name}: {} enrolments for {SEATS} seats", held.len()),
        ));
    }
    if students.len() != SEATS + 1 {
        return Err(Error::internal(
            "ENROLLED_TWICE",
            format!("{name}: a student holds two seats"),
        ));
    }
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    run("memory", Arc::new(InMemoryEventStore::new())).await?;
    let dir = std::env::temp_dir().join(format!("flext-course-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let sqlite = SqliteEventStore::open(dir.join("course.db")).await?;
    run("sqlite", sqlite.clone()).await?;
    sqlite.close().await?;
    std::fs::remove_dir_all(&dir)?;
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let schema = format!("flext_course_{}", std::process::id());
        let pg = PgEventStore::builder(url).schema(&schema).connect().await?;
        let result = run("postgresql", pg.clone()).await;
        sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
            .execute(pg.pool())
            .await?;
        result?;
    }
    Ok(())
}
