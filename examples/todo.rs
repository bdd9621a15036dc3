//! A todo list: an aggregate with three commands, handlers, a read model in SQLite and a
//! query that reads its writes. `cargo run --example todo [FILE]` (default `todo.db`).
use flext::application::{App, Dep, Executed, Repository};
use flext::ports::sql::{ReadModels, Sql};
use flext::ports::{Context, Decoded, EventProjection, sql_args};
use flext::sqlite::SqliteEventStore;
use flext::{Aggregate, DomainEvent, Error, Id, Position, command_handler, query_handler};
use serde::{Deserialize, Serialize};

#[derive(Default)]
struct Todo(bool); // whether it was added (and not removed)

#[derive(Clone, Serialize, Deserialize, DomainEvent)]
enum TodoEvent {
    #[event(name = "todo.added")]
    Added(String),
    #[event(name = "todo.completed")]
    Completed,
    #[event(name = "todo.removed")]
    Removed,
}
use TodoEvent::*;

impl Aggregate for Todo {
    const TYPE: &'static str = "todo";
    type Event = TodoEvent;
    fn apply(&mut self, e: &TodoEvent) {
        self.0 = !matches!(e, Removed);
    }
}

impl Todo {
    fn decide(&self, e: TodoEvent) -> Result<Vec<TodoEvent>, Error> {
        match (self.0, &e) {
            (true, Added(_)) => Err(Error::already_exists("TODO_EXISTS", "already added")),
            (false, Completed | Removed) => Err(Error::not_found("NO_SUCH_TODO", "no such todo")),
            _ => Ok(vec![e]),
        }
    }
}

type Todos = Repository<Todo, SqliteEventStore>;
flext::ports::messages! {
    command Add(Id<Todo>, String) -> Position = "todo.add";
    command Complete(Id<Todo>) -> Position = "todo.complete";
    command Remove(Id<Todo>) -> Position = "todo.remove";
    query List() -> Vec<(String, bool)> = "todo.list";
}

#[command_handler]
async fn add(c: Add, ctx: &Context, todos: Dep<Todos>) -> Result<Executed, Error> {
    todos
        .execute(c.0, ctx, |t| t.decide(Added(c.1.clone())))
        .await
}
#[command_handler]
async fn complete(c: Complete, ctx: &Context, todos: Dep<Todos>) -> Result<Executed, Error> {
    todos.execute(c.0, ctx, |t| t.decide(Completed)).await
}
#[command_handler]
async fn remove(c: Remove, ctx: &Context, todos: Dep<Todos>) -> Result<Executed, Error> {
    todos.execute(c.0, ctx, |t| t.decide(Removed)).await
}
#[query_handler]
async fn list(_: List, _: &Context, db: Dep<ReadModels>) -> Result<Vec<(String, bool)>, Error> {
    db.fetch("SELECT title, done FROM todos ORDER BY title", sql_args![])
        .await
}

/// The read model, one row per todo: the same SQL on SQLite and PostgreSQL.
struct TodoList;
impl<T: Sql> EventProjection<T> for TodoList {
    type Event = TodoEvent;
    const NAME: &'static str = "todo.list";
    const MIGRATIONS: &'static [&'static str] =
        &["CREATE TABLE todos (id TEXT, title TEXT, done BIGINT)"];
    async fn apply(&self, tx: &mut T, e: Decoded<'_, TodoEvent>) -> Result<(), Error> {
        let id = e.stream_key();
        let (sql, args) = match e.event {
            Added(title) => ("INSERT INTO todos VALUES ($1, $2, 0)", sql_args![id, title]),
            Completed => ("UPDATE todos SET done = 1 WHERE id = $1", sql_args![id]),
            Removed => ("DELETE FROM todos WHERE id = $1", sql_args![id]),
        };
        tx.execute(sql, args).await.map(drop)
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "todo.db".into());
    let store = SqliteEventStore::open(&path).await?;
    let app = App::builder(store.clone())
        .service(Todos::new(store.clone()))
        .service(store.read_models())
        .projection(TodoList)
        .start()?;
    let (milk, bread, eggs) = (Id::new(), Id::new(), Id::new());
    for (id, title) in [(milk, "milk"), (bread, "bread"), (eggs, "eggs")] {
        app.send(Add(id, title.into())).await?;
    }
    app.send(Complete(milk)).await?;
    let written = app.send(Remove(eggs)).await?;
    for (title, done) in app.ask_after(List(), written).await? {
        println!("[{}] {title}", if done { "x" } else { " " });
    }
    app.shutdown().await;
    store.close().await
}
