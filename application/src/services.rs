//! The typed service container: singletons, factories and per-dispatch scoped values,
//! resolved by type in constant time.

use std::any::{Any, TypeId, type_name};
use std::fmt;
use std::sync::{Arc, Mutex};

use flext_domain::Error;

use crate::typemap::TypeMap;

type Make = Arc<dyn Fn(&Services) -> Result<Arc<dyn Any + Send + Sync>, Error> + Send + Sync>;

#[derive(Clone)]
enum Provider {
    Singleton(Arc<dyn Any + Send + Sync>),
    Factory(Make),
    Scoped(Make),
}

/// Services registered once at start-up and resolved by type.
///
/// - a **singleton** is one shared value ([`Services::get`] lends it, no copy, no count);
/// - a **factory** makes a new value on every [`Services::make`];
/// - a **scoped** value is made at most once per [`Scope`] (one per dispatch).
///
/// A type that was not registered is a `NotFound`/`MISSING_SERVICE` error naming it.
///
/// ```
/// use flext::application::Services;
///
/// struct Config { greeting: &'static str }
/// struct Greeter { text: String }
///
/// let services = Services::builder()
///     .singleton(Config { greeting: "hello" })
///     .factory(|s| Ok(Greeter { text: s.get::<Config>()?.greeting.to_uppercase() }))
///     .build();
/// assert_eq!(services.get::<Config>()?.greeting, "hello");
/// assert_eq!(services.make::<Greeter>()?.text, "HELLO");
/// assert_eq!(services.get::<String>().unwrap_err().reason(), "MISSING_SERVICE");
/// # Ok::<(), flext::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct Services {
    providers: Arc<TypeMap<Provider>>,
}

impl fmt::Debug for Services {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Services")
            .field("registered", &self.providers.len())
            .finish()
    }
}

fn missing<T>(how: &str) -> Error {
    let how = if how.is_empty() {
        String::new()
    } else {
        format!("{how} ")
    };
    Error::not_found(
        "MISSING_SERVICE",
        format!("no {how}service of type {} is registered", type_name::<T>()),
    )
    .with_detail("service", type_name::<T>())
}

impl Services {
    /// A builder with nothing registered.
    pub fn builder() -> ServicesBuilder {
        ServicesBuilder::default()
    }

    /// The singleton of type `T`.
    pub fn get<T: Any + Send + Sync>(&self) -> Result<&T, Error> {
        match self.providers.get(&TypeId::of::<T>()) {
            Some(Provider::Singleton(value)) => value
                .downcast_ref::<T>()
                .ok_or_else(|| missing::<T>("singleton")),
            _ => Err(missing::<T>("singleton")),
        }
    }

    /// The singleton of type `T`, shared.
    pub fn get_arc<T: Any + Send + Sync>(&self) -> Result<Arc<T>, Error> {
        match self.providers.get(&TypeId::of::<T>()) {
            Some(Provider::Singleton(value)) => value
                .clone()
                .downcast::<T>()
                .map_err(|_| missing::<T>("singleton")),
            _ => Err(missing::<T>("singleton")),
        }
    }

    /// A new `T` from its factory.
    pub fn make<T: Any + Send + Sync>(&self) -> Result<Arc<T>, Error> {
        match self.providers.get(&TypeId::of::<T>()) {
            Some(Provider::Factory(make)) => make(self)?
                .downcast::<T>()
                .map_err(|_| missing::<T>("factory")),
            _ => Err(missing::<T>("factory")),
        }
    }

    /// Whether a service of type `T` is registered (of any kind).
    pub fn contains<T: Any>(&self) -> bool {
        self.providers.contains_key(&TypeId::of::<T>())
    }

    /// A new scope: scoped values are made at most once in it.
    pub fn scope(&self) -> Scope {
        Scope {
            services: self.clone(),
            made: Arc::new(Mutex::new(TypeMap::default())),
        }
    }
}

/// The values made for one dispatch. Cheap to clone; clones share the made values.
#[derive(Clone)]
pub struct Scope {
    services: Services,
    made: Arc<Mutex<TypeMap<Arc<dyn Any + Send + Sync>>>>,
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope").finish_non_exhaustive()
    }
}

impl Scope {
    /// The scoped `T`, made on first use in this scope; singletons and factories resolve
    /// here too, so a handler asks its scope for everything.
    pub fn get<T: Any + Send + Sync>(&self) -> Result<Arc<T>, Error> {
        let id = TypeId::of::<T>();
        match self.services.providers.get(&id) {
            Some(Provider::Scoped(make)) => {
                if let Some(v) = self.made.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
                    return v
                        .clone()
                        .downcast::<T>()
                        .map_err(|_| missing::<T>("scoped"));
                }
                // Made outside the lock: a factory may resolve other scoped values.
                let value = make(&self.services)?;
                let mut made = self.made.lock().unwrap_or_else(|p| p.into_inner());
                let value = made.entry(id).or_insert(value).clone();
                value.downcast::<T>().map_err(|_| missing::<T>("scoped"))
            }
            Some(Provider::Singleton(_)) => self.services.get_arc::<T>(),
            Some(Provider::Factory(_)) => self.services.make::<T>(),
            None => Err(missing::<T>("")),
        }
    }

    /// The container this scope belongs to.
    pub fn services(&self) -> &Services {
        &self.services
    }
}

/// Registers services; [`ServicesBuilder::build`] freezes them. A later registration of a
/// type replaces the earlier one.
#[derive(Default)]
pub struct ServicesBuilder {
    providers: TypeMap<Provider>,
}

impl fmt::Debug for ServicesBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServicesBuilder")
            .field("registered", &self.providers.len())
            .finish()
    }
}

impl ServicesBuilder {
    /// One shared `T`.
    pub fn singleton<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.providers
            .insert(TypeId::of::<T>(), Provider::Singleton(Arc::new(value)));
        self
    }

    /// A new `T` on every resolve, made by `make` (which may resolve other services).
    pub fn factory<T, F>(mut self, make: F) -> Self
    where
        T: Any + Send + Sync,
        F: Fn(&Services) -> Result<T, Error> + Send + Sync + 'static,
    {
        let make: Make =
            Arc::new(move |s| make(s).map(|v| Arc::new(v) as Arc<dyn Any + Send + Sync>));
        self.providers
            .insert(TypeId::of::<T>(), Provider::Factory(make));
        self
    }

    /// One `T` per [`Scope`], made by `make` on first use.
    pub fn scoped<T, F>(mut self, make: F) -> Self
    where
        T: Any + Send + Sync,
        F: Fn(&Services) -> Result<T, Error> + Send + Sync + 'static,
    {
        let make: Make =
            Arc::new(move |s| make(s).map(|v| Arc::new(v) as Arc<dyn Any + Send + Sync>));
        self.providers
            .insert(TypeId::of::<T>(), Provider::Scoped(make));
        self
    }

    /// The container.
    pub fn build(self) -> Services {
        Services {
            providers: Arc::new(self.providers),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[derive(Debug)]
    struct Db(&'static str);
    #[derive(Debug)]
    struct UnitOfWork(u32);

    #[test]
    fn scoped_values_are_made_once_per_scope() {
        static MADE: AtomicU32 = AtomicU32::new(0);
        let services = Services::builder()
            .singleton(Db("main"))
            .scoped(|_| Ok(UnitOfWork(MADE.fetch_add(1, Ordering::SeqCst))))
            .build();
        let first = services.scope();
        let a = first.get::<UnitOfWork>().expect("scoped");
        let b = first.get::<UnitOfWork>().expect("scoped");
        assert!(Arc::ptr_eq(&a, &b));
        let second = services.scope();
        assert_eq!(second.get::<UnitOfWork>().expect("scoped").0, 1);
        assert_eq!(
            first.get::<Db>().expect("singleton through the scope").0,
            "main"
        );
        assert_eq!(
            services
                .get::<UnitOfWork>()
                .expect_err("not a singleton")
                .reason(),
            "MISSING_SERVICE"
        );
    }

    #[test]
    fn factories_make_new_values_and_missing_types_are_named() {
        static MADE: AtomicU32 = AtomicU32::new(0);
        let services = Services::builder()
            .factory(|_| Ok(UnitOfWork(MADE.fetch_add(1, Ordering::SeqCst))))
            .build();
        assert_eq!(services.make::<UnitOfWork>().expect("factory").0, 0);
        assert_eq!(services.make::<UnitOfWork>().expect("factory").0, 1);
        let err = services.get::<Db>().expect_err("missing");
        assert_eq!(err.code(), flext_domain::ErrorCode::NotFound);
        assert!(err.message().contains("Db"), "{err}");
    }

    #[test]
    fn a_failing_factory_reports_its_error() {
        let services = Services::builder()
            .factory::<UnitOfWork, _>(|s| s.get::<Db>().map(|_| UnitOfWork(0)))
            .build();
        assert_eq!(
            services
                .make::<UnitOfWork>()
                .expect_err("needs Db")
                .reason(),
            "MISSING_SERVICE"
        );
    }

    #[test]
    fn the_container_and_scopes_are_send_and_sync() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Services>();
        send_sync::<Scope>();
    }
}

/// A value a macro-registered handler takes as an extra argument, resolved at dispatch
/// from that dispatch's [`Scope`] (like axum's extractors): singletons, factory values and
/// scoped values made once for the dispatch.
pub trait FromServices: Sized {
    /// Resolves the value; a missing service is `NotFound`/`MISSING_SERVICE`.
    fn from_services(scope: &Scope) -> Result<Self, Error>;

    /// The type names of what `services` lacks to resolve this value (none by default),
    /// so a registry can refuse to build a bus whose handlers could not run, before the
    /// first dispatch.
    fn missing(services: &Services) -> Vec<&'static str> {
        let _ = services;
        Vec::new()
    }
}

/// A service of type `T` from the container, as a handler argument:
/// `async fn handle(cmd: Open, ctx: &Context, repo: Dep<AccountRepo>)`. A singleton is
/// shared, a factory makes a new one, a scoped value is the one of this dispatch.
/// It dereferences to `T`.
#[derive(Debug)]
pub struct Dep<T: ?Sized> {
    inner: Arc<T>,
}

impl<T: ?Sized> Dep<T> {
    /// The shared service.
    pub fn into_arc(self) -> Arc<T> {
        self.inner
    }
}

impl<T: ?Sized> Clone for Dep<T> {
    fn clone(&self) -> Self {
        Dep {
            inner: self.inner.clone(),
        }
    }
}

impl<T: ?Sized> std::ops::Deref for Dep<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.inner
    }
}

impl<T: Any + Send + Sync> FromServices for Dep<T> {
    fn from_services(scope: &Scope) -> Result<Self, Error> {
        scope.get::<T>().map(|inner| Dep { inner })
    }

    fn missing(services: &Services) -> Vec<&'static str> {
        if services.contains::<T>() {
            Vec::new()
        } else {
            vec![type_name::<T>()]
        }
    }
}

impl FromServices for Services {
    fn from_services(scope: &Scope) -> Result<Self, Error> {
        Ok(scope.services().clone())
    }
}

impl FromServices for Scope {
    fn from_services(scope: &Scope) -> Result<Self, Error> {
        Ok(scope.clone())
    }
}
