//! Log setup shared by the binaries: `tracing` to stderr, human or JSON (`--log-format json`),
//! filtered by `RUST_LOG` (default `info`).
//!
//! # JSON lines
//!
//! One object per event, keys in this order, never one key twice:
//!
//! ```json
//! {"timestamp":"…","level":"WARN","message":"attempt failed","class":"network",…,
//!  "fields":{"message":"connection reset"},"target":"dramaq_worker::process",
//!  "span":{"task":"vid-…","name":"task"},"spans":[{"task":"vid-…","name":"task"}]}
//! ```
//!
//! Event fields are flattened into the object, as with `tracing-subscriber`'s
//! `flatten_event(true)`, so log queries read `class` rather than `fields.class`. `message` is
//! the event's text. A field that would collide — a second `message` (as in
//! `warn!(message = %err.message, "attempt failed")`), a repeated name, or a name the line uses
//! itself (`timestamp`, `level`, `target`, `span`, `spans`, `fields`) — goes into a nested
//! `fields` object under its own name instead (a further repeat there gets `_2`, `_3`, …). So
//! the event text stays where every log tool looks for it, nothing is dropped, and a strict JSON
//! reader never sees a duplicate key, whatever the call sites do. (The stock formatter writes
//! both `message` keys, and most readers silently keep only the last.)

use serde_json::{Map, Value};
use std::collections::HashSet;
use std::fmt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("unknown log format '{other}' (use text or json)")),
        }
    }
}

pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    // A second initialisation (tests, embedding) keeps the first subscriber.
    match format {
        LogFormat::Text => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .try_init();
        }
        LogFormat::Json => {
            let _ = json_subscriber(filter, std::io::stderr).try_init();
        }
    }
}

/// The `--log-format json` subscriber, writing to `writer`.
fn json_subscriber<W>(filter: EnvFilter, writer: W) -> impl Subscriber + Send + Sync
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .fmt_fields(JsonFields::new())
        .event_format(JsonLines)
        .finish()
}

/// Keys a JSON line writes itself; an event field of one of these names goes under `fields`.
const RESERVED: [&str; 6] = ["timestamp", "level", "target", "span", "spans", "fields"];

/// The JSON event format (module docs).
#[derive(Debug, Clone, Copy, Default)]
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let meta = event.metadata();

        let mut fields = FieldCollector::default();
        event.record(&mut fields);

        let mut line = JsonObject::default();
        line.entry("timestamp", &Value::String(timestamp));
        line.entry("level", &Value::String(meta.level().as_str().to_string()));
        let mut top: HashSet<&str> = RESERVED.into_iter().collect();
        let mut nested = JsonObject::default();
        for (name, value) in &fields.0 {
            if top.insert(name) {
                line.entry(name, value);
            } else {
                nested.entry_renaming(name, value);
            }
        }
        if !nested.is_empty() {
            line.entry_raw("fields", &nested.finish());
        }
        line.entry("target", &Value::String(meta.target().to_string()));

        let current = event
            .parent()
            .and_then(|id| ctx.span(id))
            .or_else(|| ctx.lookup_current());
        if let Some(current) = current {
            let spans: Vec<Value> = current
                .scope()
                .from_root()
                .map(|span| span_object(&span))
                .collect();
            if let Some(leaf) = spans.last() {
                line.entry("span", leaf);
            }
            line.entry("spans", &Value::Array(spans));
        }
        writeln!(writer, "{}", line.finish())
    }
}

/// A span as `{<its fields>, "name": <span name>}`; its fields were recorded by [`JsonFields`].
fn span_object<S>(span: &tracing_subscriber::registry::SpanRef<'_, S>) -> Value
where
    S: for<'a> LookupSpan<'a>,
{
    let mut obj = Map::new();
    let ext = span.extensions();
    if let Some(recorded) = ext.get::<FormattedFields<JsonFields>>() {
        match serde_json::from_str::<Value>(recorded) {
            Ok(Value::Object(map)) => obj = map,
            Ok(Value::Null) | Err(_) if recorded.is_empty() => {}
            Ok(other) => {
                obj.insert("field".into(), other);
            }
            Err(_) => {
                obj.insert("field".into(), Value::String(recorded.to_string()));
            }
        }
    }
    // serde_json's map keeps one value per key, so a span field called `name` is replaced
    // rather than repeated.
    obj.insert("name".into(), Value::String(span.name().to_string()));
    Value::Object(obj)
}

/// A JSON object written key by key in order, refusing a key it already has (callers rename).
#[derive(Default)]
struct JsonObject {
    text: String,
    keys: HashSet<String>,
}

impl JsonObject {
    fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    fn entry(&mut self, key: &str, value: &Value) {
        let value = serde_json::to_string(value).unwrap_or_else(|_| "null".into());
        self.entry_raw(key, &value);
    }

    /// `value` is JSON text already.
    fn entry_raw(&mut self, key: &str, value: &str) {
        if !self.keys.insert(key.to_string()) {
            return;
        }
        self.text.push(if self.text.is_empty() { '{' } else { ',' });
        self.text
            .push_str(&Value::String(key.to_string()).to_string());
        self.text.push(':');
        self.text.push_str(value);
    }

    /// Adds `key`, or `key_2`, `key_3`, … when taken.
    fn entry_renaming(&mut self, key: &str, value: &Value) {
        let mut name = key.to_string();
        let mut n = 1;
        while self.keys.contains(&name) {
            n += 1;
            name = format!("{key}_{n}");
        }
        self.entry(&name, value);
    }

    fn finish(self) -> String {
        if self.text.is_empty() {
            "{}".to_string()
        } else {
            self.text + "}"
        }
    }
}

/// An event's fields in the order they were recorded, repeats included.
#[derive(Default)]
struct FieldCollector(Vec<(&'static str, Value)>);

impl Visit for FieldCollector {
    fn record_f64(&mut self, field: &Field, value: f64) {
        let v = serde_json::Number::from_f64(value)
            .map(Value::Number)
            .unwrap_or_else(|| Value::String(value.to_string()));
        self.0.push((field.name(), v));
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.push((field.name(), Value::from(value)));
    }

    fn record_i128(&mut self, field: &Field, value: i128) {
        let v = i64::try_from(value)
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(value.to_string()));
        self.0.push((field.name(), v));
    }

    fn record_u128(&mut self, field: &Field, value: u128) {
        let v = u64::try_from(value)
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(value.to_string()));
        self.0.push((field.name(), v));
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.push((field.name(), Value::Bool(value)));
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0
            .push((field.name(), Value::String(value.to_string())));
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.0
            .push((field.name(), Value::String(value.to_string())));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0
            .push((field.name(), Value::String(format!("{value:?}"))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
    use std::sync::{Arc, Mutex};

    /// Captures what the subscriber writes.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'w> MakeWriter<'w> for Captured {
        type Writer = Captured;
        fn make_writer(&'w self) -> Captured {
            self.clone()
        }
    }

    /// Parses any JSON value, refusing an object with a repeated key (serde_json alone keeps
    /// the last one silently).
    struct Strict;

    impl<'de> de::DeserializeSeed<'de> for Strict {
        type Value = Value;
        fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
            d.deserialize_any(Strict)
        }
    }

    impl<'de> Visitor<'de> for Strict {
        type Value = Value;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
            Ok(Value::Bool(v))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
            Ok(Value::from(v))
        }
        fn visit_str<E>(self, v: &str) -> Result<Value, E> {
            Ok(Value::String(v.to_string()))
        }
        fn visit_unit<E>(self) -> Result<Value, E> {
            Ok(Value::Null)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
            let mut out = Vec::new();
            while let Some(v) = seq.next_element_seed(Strict)? {
                out.push(v);
            }
            Ok(Value::Array(out))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                let value = map.next_value_seed(Strict)?;
                if out.insert(key.clone(), value).is_some() {
                    return Err(de::Error::custom(format!("duplicate key {key:?}")));
                }
            }
            Ok(Value::Object(out))
        }
    }

    fn strict_parse(line: &str) -> Value {
        let mut de = serde_json::Deserializer::from_str(line);
        let v = de::DeserializeSeed::deserialize(Strict, &mut de)
            .unwrap_or_else(|e| panic!("{e}: {line}"));
        de.end().expect("one value per line");
        v
    }

    fn capture(emit: impl FnOnce()) -> Vec<Value> {
        let out = Captured::default();
        let subscriber = json_subscriber(EnvFilter::new("trace"), out.clone());
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        text.lines().map(strict_parse).collect()
    }

    #[test]
    fn strict_parse_refuses_duplicate_keys() {
        let mut de = serde_json::Deserializer::from_str(r#"{"message":"a","message":"b"}"#);
        assert!(de::DeserializeSeed::deserialize(Strict, &mut de).is_err());
    }

    #[test]
    fn a_message_field_beside_the_text_is_kept_without_a_duplicate_key() {
        let err_message = "connection reset by peer";
        let lines = capture(|| {
            let span = tracing::info_span!("task", task = "vid-1", name = "shadowed");
            let _g = span.enter();
            tracing::warn!(
                class = "network",
                message = %err_message,
                attempt = 2u32,
                level = "a field named like a key",
                "attempt failed"
            );
        });
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert_eq!(line["message"], "attempt failed", "{line}");
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["class"], "network", "{line}");
        assert_eq!(line["attempt"], 2, "{line}");
        assert_eq!(line["fields"]["message"], err_message, "{line}");
        assert_eq!(
            line["fields"]["level"], "a field named like a key",
            "{line}"
        );
        assert_eq!(line["target"], module_path!(), "{line}");
        assert_eq!(line["span"]["task"], "vid-1", "{line}");
        assert_eq!(line["span"]["name"], "task", "{line}");
        assert_eq!(line["spans"][0]["name"], "task", "{line}");
        assert!(line["timestamp"].as_str().is_some_and(|t| t.contains('T')));
    }

    #[test]
    fn plain_events_look_like_flattened_json() {
        let lines = capture(|| {
            tracing::info!(count = 3, ok = true, ratio = 0.5, "hello \"quoted\"\nline");
            tracing::info!(message = "only an explicit message");
            tracing::error!(a = 1, a = 2, "repeat");
        });
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["message"], "hello \"quoted\"\nline");
        assert_eq!(lines[0]["count"], 3);
        assert_eq!(lines[0]["ok"], true);
        assert_eq!(lines[0]["ratio"], 0.5);
        assert!(lines[0].get("fields").is_none());
        assert!(lines[0].get("span").is_none());
        assert_eq!(lines[1]["message"], "only an explicit message");
        assert_eq!(lines[2]["a"], 1);
        assert_eq!(lines[2]["fields"]["a"], 2);
    }
}
