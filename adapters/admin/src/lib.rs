//! The flext admin console, and the operator's model it shares with the `flext` command
//! line.
//!
//! [`router`] is an [axum] router that shows a flext store in the browser and lets an
//! operator act on it: a dashboard (event rate, consumers with lag and stall alerts,
//! health), a stream browser, event detail with correlation and causation links, a
//! business action as a causation tree, consumers paused, resumed, rebuilt, dead letters
//! redriven or discarded. Pages are rendered on the server from templates checked at
//! compile time; the dashboard updates itself through server-sent events. Nobody is let
//! in anonymously: users sign in with a password, or scripts send a bearer token; every
//! user is [`Role::ReadOnly`] or [`Role::Operator`], and every action a browser posts
//! carries the session's CSRF token.
//!
//! Mount it in the service's own router, or run `flext admin serve`:
//!
//! ```
//! # async fn demo() -> Result<(), flext::Error> {
//! use flext_admin::{AdminConfig, Role};
//! use flext::sqlite::SqliteEventStore;
//!
//! let store = SqliteEventStore::open(std::env::temp_dir().join("flext-admin-doc.db")).await?;
//! let admin = flext_admin::router(
//!     store,
//!     AdminConfig::new()
//!         .base_path("/admin")
//!         .user("ada", "correct horse battery staple", Role::Operator)
//!         .token("a-long-random-token-for-scripts", Role::ReadOnly),
//! )?;
//! let app: axum::Router = axum::Router::new().nest("/admin", admin);
//! # drop(app);
//! # Ok(())
//! # }
//! ```
//!
//! [`ops`] is the model both front ends read: consumers with lag and state, the health
//! report, control requests carried out by a consumer's owner, events as JSON with
//! personal fields masked, and a business action as a causation tree.

mod auth;
pub mod ops;
mod pages;
pub mod tree;

pub use auth::{AdminConfig, MIN_TOKEN_LEN, Role};
pub use pages::router;
