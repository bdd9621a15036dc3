//! Plugins contribute handlers and behaviors; the application takes them from the
//! registry's started plugins when it builds its buses.

use std::sync::Arc;

use flext_application::{
    Behavior, BoxFuture, Message, Next, Pipeline, PluginRegistry, Registry, Reply,
};
use flext_domain::Error;
use flext_ports::{Command, CommandHandler, Context, Contributions, Plugin};

#[derive(Clone)]
struct Stamp;
impl Command for Stamp {
    type Output = String;
    const NAME: &'static str = "audit.stamp";
}

struct Stamper;
impl CommandHandler<Stamp> for Stamper {
    async fn handle(&self, _: Stamp, _: &Context) -> Result<String, Error> {
        Ok("stamped".to_owned())
    }
}

/// Refuses every command while the plugin says the system is read-only.
struct ReadOnly;
impl Behavior for ReadOnly {
    fn handle<'s, 'a: 's>(
        &'s self,
        message: Message<'a>,
        _: &'a Context,
        _: Next<'a>,
    ) -> BoxFuture<'s, Result<Reply, Error>> {
        Box::pin(async move {
            Err(Error::unavailable(
                "READ_ONLY",
                format!("{} refused: read-only", message.name()),
            ))
        })
    }
}

/// A handler registration a plugin contributes.
type Handlers = fn(Registry) -> Registry;

struct Audit;
impl Plugin for Audit {
    fn name(&self) -> &str {
        "audit"
    }
    fn version(&self) -> &str {
        "1.0.0"
    }
    fn contribute(&self, contributions: &mut Contributions) {
        let handlers: Handlers = |registry| registry.command::<Stamp, _>(Stamper);
        contributions.add(handlers);
    }
}

struct Maintenance;
impl Plugin for Maintenance {
    fn name(&self) -> &str {
        "maintenance"
    }
    fn version(&self) -> &str {
        "1.0.0"
    }
    fn contribute(&self, contributions: &mut Contributions) {
        contributions.add(Arc::new(ReadOnly) as Arc<dyn Behavior>);
    }
}

async fn bus_from(plugins: &PluginRegistry) -> flext_application::CommandBus {
    let mut contributions = plugins.contributions();
    let registry = contributions
        .take::<Handlers>()
        .into_iter()
        .fold(Registry::new(), |registry, add| add(registry));
    let pipeline = contributions
        .take::<Arc<dyn Behavior>>()
        .into_iter()
        .fold(Pipeline::new(), Pipeline::layer_shared);
    assert!(
        contributions.is_empty(),
        "every contribution was taken: {contributions:?}"
    );
    registry.command_bus(pipeline).expect("bus")
}

#[tokio::test]
async fn started_plugins_contribute_handlers_and_behaviors() {
    let mut plugins = PluginRegistry::new();
    plugins.register(Audit).unwrap();
    plugins.start_all().await.unwrap();
    let bus = bus_from(&plugins).await;
    assert_eq!(
        bus.dispatch(Stamp, &Context::new()).await.unwrap(),
        "stamped"
    );

    let mut plugins = PluginRegistry::new();
    plugins
        .register(Audit)
        .unwrap()
        .register(Maintenance)
        .unwrap();
    plugins.start_all().await.unwrap();
    let bus = bus_from(&plugins).await;
    let err = bus.dispatch(Stamp, &Context::new()).await.unwrap_err();
    assert_eq!(err.reason(), "READ_ONLY");

    // A plugin that is not started contributes nothing.
    let mut plugins = PluginRegistry::new();
    plugins.register(Maintenance).unwrap();
    assert!(plugins.contributions().is_empty());
}
