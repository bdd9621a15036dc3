//! `examples/course` as a user runs it: eight tasks enrol into one 30-seat course through
//! conditional appends on memory, SQLite and (with `DATABASE_URL`, which the test script
//! always sets) PostgreSQL; it exits 0 only if every store admitted exactly 30 students,
//! none twice.

mod common;

#[test]
fn the_course_example_admits_exactly_its_seats_on_every_store() {
    let bin = common::example_binary("course");
    let out = std::process::Command::new(&bin)
        .output()
        .expect("the course example runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "course failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut stores = vec!["memory", "sqlite"];
    if std::env::var("DATABASE_URL").is_ok() {
        stores.push("postgresql");
    }
    for store in stores {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(store))
            .unwrap_or_else(|| panic!("no line for {store} in {stdout}"));
        assert!(line.contains("admitted  30,"), "{line}");
        assert!(line.contains("holds 30 enrolments"), "{line}");
    }
}
