//! `examples/todo` as a user runs it: twice on one SQLite file, as two processes. The
//! first run lists what it wrote (read-your-writes through the projection); the second
//! finds the first run's todos in the read model and adds its own.
#![cfg(all(feature = "macros", feature = "sqlite"))]

mod common;

fn todo(file: &std::path::Path) -> String {
    let bin = common::example_binary("todo");
    let out = std::process::Command::new(bin)
        .arg(file)
        .output()
        .expect("run the todo example");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

#[test]
fn the_todo_example_lists_its_writes_and_keeps_them() {
    let file = std::env::temp_dir().join(format!("flext-todo-{}.db", uuid::Uuid::now_v7()));
    assert_eq!(todo(&file), "[ ] bread\n[x] milk\n");
    assert_eq!(
        todo(&file),
        "[ ] bread\n[ ] bread\n[x] milk\n[x] milk\n",
        "the second run sees the first run's todos"
    );
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
    }
}
