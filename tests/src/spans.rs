//! Spans as a test sees them: a `tracing` layer that keeps every finished span of guirpc's
//! (`guirpc.*`), with its fields as text.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Mutex, OnceLock};

use tracing::Subscriber;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// A finished span: its name and fields.
#[derive(Debug, Clone, Default)]
pub struct FinishedSpan {
    /// `guirpc.call` or `guirpc.serve`.
    pub name: &'static str,
    /// Every field recorded, as text.
    pub fields: HashMap<String, String>,
}

impl FinishedSpan {
    /// A field's value, or `""`.
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

fn finished() -> &'static Mutex<Vec<FinishedSpan>> {
    static FINISHED: OnceLock<Mutex<Vec<FinishedSpan>>> = OnceLock::new();
    FINISHED.get_or_init(Mutex::default)
}

/// Installs the capturing layer as the process's subscriber (once).
pub fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let _ = tracing_subscriber::registry().with(Capture).try_init();
    });
}

/// The finished spans for which `keep` holds, waiting up to two seconds for `count` of them.
pub async fn wait_for(count: usize, keep: impl Fn(&FinishedSpan) -> bool) -> Vec<FinishedSpan> {
    let kept = || -> Vec<FinishedSpan> {
        finished()
            .lock()
            .unwrap()
            .iter()
            .filter(|span| keep(span))
            .cloned()
            .collect()
    };
    let found = crate::poll(std::time::Duration::from_secs(2), || {
        let spans = kept();
        std::future::ready(if spans.len() >= count {
            Ok(spans)
        } else {
            Err(spans)
        })
    })
    .await;
    found.unwrap_or_else(|spans| spans)
}

struct Capture;

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if !attrs.metadata().name().starts_with("guirpc.") {
            return;
        }
        let mut span = FinishedSpan {
            name: attrs.metadata().name(),
            fields: HashMap::new(),
        };
        attrs.record(&mut Fields(&mut span.fields));
        if let Some(data) = ctx.span(id) {
            data.extensions_mut().insert(span);
        }
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(data) = ctx.span(id)
            && let Some(span) = data.extensions_mut().get_mut::<FinishedSpan>()
        {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(data) = ctx.span(&id)
            && let Some(span) = data.extensions_mut().remove::<FinishedSpan>()
        {
            finished().lock().unwrap().push(span);
        }
    }
}
