//! The warnings a pipe test reads: the server says in its log what a misbehaving worker
//! did, and what the rule is.

use std::time::Duration;

/// Warnings logged on the thread that captures them (a current-thread runtime's, on which
/// the server's tasks run too), as text: message and fields.
#[derive(Clone, Default)]
pub(super) struct Warnings(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Warnings {
    pub(super) fn capture(&self) -> tracing::subscriber::DefaultGuard {
        use tracing_subscriber::layer::SubscriberExt;
        tracing::subscriber::set_default(tracing_subscriber::registry().with(self.clone()))
    }

    pub(super) fn matching(&self, keep: impl Fn(&str) -> bool) -> usize {
        self.0.lock().unwrap().iter().filter(|w| keep(w)).count()
    }

    /// Waits (up to 10 s) for a warning that `keep` holds for.
    pub(super) async fn wait_for(&self, keep: impl Fn(&str) -> bool) -> bool {
        guirpc_tests::until(Duration::from_secs(10), || self.matching(&keep) > 0).await
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Warnings {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Text(String);
        impl tracing::field::Visit for Text {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                self.0.push_str(&format!("{}={value:?} ", field.name()));
            }
            fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
                self.0.push_str(&format!("{}={value} ", field.name()));
            }
        }
        if *event.metadata().level() == tracing::Level::WARN {
            let mut text = Text(String::new());
            event.record(&mut text);
            self.0.lock().unwrap().push(text.0);
        }
    }
}
