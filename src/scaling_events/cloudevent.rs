//! The CloudEvents 1.0 form of a scaling event (pure), and its HTTP encodings:
//! structured (`application/cloudevents+json`) and binary (`ce-*` headers).

use jiff::Timestamp;
use ring::digest;
use serde_json::{Map, Value, json};

use super::types::EventType;
use crate::api::{ConsumerStatus, GROUP, JournalEntry, VERSION_V1};

/// The Consumer an event is about, as its metadata says.
#[derive(Clone, Copy, Debug)]
pub struct ConsumerRef<'a> {
    pub namespace: &'a str,
    pub name: &'a str,
    /// Empty when unknown (a local-mode file without `metadata.uid`).
    pub uid: &'a str,
}

impl ConsumerRef<'_> {
    /// The CloudEvents `source`: the Consumer's API path.
    pub fn source(&self) -> String {
        format!(
            "/apis/{GROUP}/{VERSION_V1}/namespaces/{}/consumers/{}",
            self.namespace, self.name
        )
    }

    fn json(&self) -> Value {
        json!({"namespace": self.namespace, "name": self.name, "uid": self.uid})
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct CloudEvent {
    pub id: String,
    pub source: String,
    pub type_: String,
    pub subject: Option<String>,
    pub time: Timestamp,
    pub data: Value,
}

/// A deterministic event id: the same for the same event on every retry, after a
/// restart and after failover; different for a re-created Consumer (its uid, and
/// in local mode the decision time, differ). Shaped like a UUID.
pub fn event_id(c: &ConsumerRef<'_>, kind: &str, sequence: i64, time: Timestamp) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in [
        c.namespace.as_bytes(),
        c.name.as_bytes(),
        c.uid.as_bytes(),
        kind.as_bytes(),
        sequence.to_string().as_bytes(),
        time.as_nanosecond().to_string().as_bytes(),
    ] {
        ctx.update(part);
        ctx.update(&[0]);
    }
    let d = ctx.finish();
    let h: String = d.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// The `data` of an event: what the journal keeps, after the fields the entry
/// and the Consumer say (they are not stored twice).
fn with_consumer(c: &ConsumerRef<'_>, sequence: i64, instance: Option<i32>, data: &Value) -> Value {
    let mut out = Map::new();
    out.insert("consumer".into(), c.json());
    out.insert("sequence".into(), json!(sequence));
    if let Some(i) = instance {
        out.insert("instance".into(), json!(i));
    }
    if let Value::Object(fields) = data {
        for (k, v) in fields {
            out.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    Value::Object(out)
}

/// The CloudEvent of a journal entry.
pub fn from_entry(c: &ConsumerRef<'_>, entry: &JournalEntry) -> CloudEvent {
    CloudEvent {
        id: event_id(c, &entry.type_, entry.sequence, entry.time.0),
        source: c.source(),
        type_: entry.type_.clone(),
        subject: entry.instance.map(|i| format!("instances/{i}")),
        time: entry.time.0,
        data: with_consumer(c, entry.sequence, entry.instance, &entry.data.value()),
    }
}

/// A snapshot of every instance of a Consumer, for a subscriber whose cursor is
/// not in the journal; `sequence` is the journal head it brings the subscriber to.
pub fn resync(c: &ConsumerRef<'_>, status: Option<&ConsumerStatus>, now: Timestamp) -> CloudEvent {
    let journal = status
        .and_then(|s| s.journal.as_deref())
        .unwrap_or_default();
    let head = super::journal::head(journal);
    // The id names the state at this head, so a repeated resync is the same event.
    let at = journal.last().map_or(Timestamp::UNIX_EPOCH, |e| e.time.0);
    let instances: Vec<Value> = status
        .and_then(|s| s.instances.as_ref())
        .map(|list| {
            list.iter()
                .map(|i| {
                    let mut v = json!({
                        "instance": i.id,
                        "partitions": i.partitions,
                        "state": i.state.as_str(),
                        "resources": i.resources,
                    });
                    if let Some(since) = &i.since {
                        v["since"] = json!(since.0.to_string());
                    }
                    if let Some(p) = &i.pending {
                        v["pending"] = json!(p);
                    }
                    if let Some(s) = &i.saturation {
                        v["saturation"] = json!({"cpu": s.0});
                    }
                    v
                })
                .collect()
        })
        .unwrap_or_default();
    let metrics = status
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| c.type_ == crate::scaling::status::METRICS_AVAILABLE)
        })
        .map(
            |c| json!({"available": c.status == "True", "reason": c.reason, "message": c.message}),
        );
    let mut data = json!({"instances": instances});
    if let Some(m) = metrics {
        data["metrics"] = m;
    }
    CloudEvent {
        id: event_id(c, EventType::Resync.as_str(), head, at),
        source: c.source(),
        type_: EventType::Resync.as_str().into(),
        subject: None,
        time: if head == 0 { now } else { at },
        data: with_consumer(c, head, None, &data),
    }
}

/// A test event for a subscription (`namespace/name`).
pub fn ping(subscription_namespace: &str, subscription_name: &str, now: Timestamp) -> CloudEvent {
    let c = ConsumerRef {
        namespace: subscription_namespace,
        name: subscription_name,
        uid: "",
    };
    CloudEvent {
        id: event_id(&c, EventType::Ping.as_str(), 0, now),
        source: format!(
            "/apis/konsumer.dev/v1alpha1/namespaces/{subscription_namespace}/scalingsubscriptions/{subscription_name}"
        ),
        type_: EventType::Ping.as_str().into(),
        subject: None,
        time: now,
        data: json!({"subscription": {"namespace": subscription_namespace, "name": subscription_name}}),
    }
}

/// How the event travels in the HTTP request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ContentMode {
    #[default]
    Structured,
    Binary,
}

impl ContentMode {
    pub fn parse(s: Option<&str>) -> Option<ContentMode> {
        match s.unwrap_or("") {
            "" | "structured" => Some(ContentMode::Structured),
            "binary" => Some(ContentMode::Binary),
            _ => None,
        }
    }
}

/// The request's headers (besides signing) and body.
#[derive(Clone, Debug, PartialEq)]
pub struct Encoded {
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

fn time_string(t: Timestamp) -> String {
    t.to_string()
}

/// Encodes `event` per the CloudEvents HTTP binding.
pub fn encode(event: &CloudEvent, mode: ContentMode) -> Encoded {
    match mode {
        ContentMode::Structured => {
            let mut v = json!({
                "specversion": "1.0",
                "id": event.id,
                "source": event.source,
                "type": event.type_,
                "time": time_string(event.time),
                "datacontenttype": "application/json",
                "data": event.data,
            });
            if let Some(s) = &event.subject {
                v["subject"] = json!(s);
            }
            Encoded {
                headers: vec![(
                    "content-type",
                    "application/cloudevents+json; charset=utf-8".into(),
                )],
                body: serde_json::to_vec(&v).unwrap_or_default(),
            }
        }
        ContentMode::Binary => {
            let mut headers = vec![
                ("content-type", "application/json".to_string()),
                ("ce-specversion", "1.0".into()),
                ("ce-id", event.id.clone()),
                ("ce-source", event.source.clone()),
                ("ce-type", event.type_.clone()),
                ("ce-time", time_string(event.time)),
            ];
            if let Some(s) = &event.subject {
                headers.push(("ce-subject", s.clone()));
            }
            Encoded {
                headers,
                body: serde_json::to_vec(&event.data).unwrap_or_default(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn orders(uid: &str) -> ConsumerRef<'_> {
        ConsumerRef {
            namespace: "streams",
            name: "orders",
            uid,
        }
    }

    fn entry(seq: i64, at: &str) -> JournalEntry {
        JournalEntry {
            sequence: seq,
            type_: EventType::Scaled.as_str().into(),
            time: Time(at.parse().unwrap()),
            instance: Some(2),
            data: crate::api::EventData::new(&json!({"direction": "up"})),
        }
    }

    #[test]
    fn ids_are_deterministic_and_differ_per_consumer_uid_sequence_and_time() {
        let a = from_entry(&orders("u1"), &entry(7, "2026-11-22T12:00:00Z"));
        let again = from_entry(&orders("u1"), &entry(7, "2026-11-22T12:00:00Z"));
        assert_eq!(a.id, again.id);
        assert_eq!(a.id.len(), 36);
        let recreated = from_entry(&orders("u2"), &entry(7, "2026-11-22T12:00:00Z"));
        let next = from_entry(&orders("u1"), &entry(8, "2026-11-22T12:00:00Z"));
        let local_recreated = from_entry(&orders(""), &entry(7, "2026-11-22T12:00:01Z"));
        let local = from_entry(&orders(""), &entry(7, "2026-11-22T12:00:00Z"));
        assert_ne!(a.id, recreated.id);
        assert_ne!(a.id, next.id);
        assert_ne!(local.id, local_recreated.id);
    }

    #[test]
    fn an_entry_becomes_an_event_about_its_consumer_and_instance() {
        let e = from_entry(&orders("u1"), &entry(7, "2026-11-22T12:00:00Z"));
        assert_eq!(
            e.source,
            "/apis/konsumerator.lwolf.org/v1/namespaces/streams/consumers/orders"
        );
        assert_eq!(e.subject.as_deref(), Some("instances/2"));
        assert_eq!(
            e.data["consumer"],
            json!({"namespace": "streams", "name": "orders", "uid": "u1"})
        );
        assert_eq!(e.data["sequence"], 7);
        assert_eq!(e.data["instance"], 2, "from the entry, not stored twice");
        assert_eq!(e.data["direction"], "up");
    }

    #[test]
    fn structured_and_binary_carry_the_same_attributes() {
        let e = from_entry(&orders("u1"), &entry(7, "2026-11-22T12:00:00Z"));
        let s = encode(&e, ContentMode::Structured);
        let v: Value = serde_json::from_slice(&s.body).unwrap();
        assert_eq!(v["specversion"], "1.0");
        assert_eq!(v["id"], e.id);
        assert_eq!(v["subject"], "instances/2");
        assert_eq!(v["time"], "2026-11-22T12:00:00Z");
        assert_eq!(v["data"], e.data);
        assert!(s.headers[0].1.starts_with("application/cloudevents+json"));
        let b = encode(&e, ContentMode::Binary);
        let h = |n: &str| {
            b.headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        assert_eq!(h("ce-id"), Some(e.id.clone()));
        assert_eq!(h("ce-subject").as_deref(), Some("instances/2"));
        assert_eq!(h("content-type").as_deref(), Some("application/json"));
        assert_eq!(serde_json::from_slice::<Value>(&b.body).unwrap(), e.data);
    }

    #[test]
    fn a_resync_names_the_head_it_brings_the_subscriber_to() {
        let status = ConsumerStatus {
            journal: Some(vec![
                entry(3, "2026-11-22T12:00:00Z"),
                entry(4, "2026-11-22T12:00:10Z"),
            ]),
            ..ConsumerStatus::default()
        };
        let now = "2026-11-22T13:00:00Z".parse().unwrap();
        let r = resync(&orders("u1"), Some(&status), now);
        assert_eq!(r.data["sequence"], 4);
        assert_eq!(r.subject, None);
        assert_eq!(r.id, resync(&orders("u1"), Some(&status), now).id);
        assert_ne!(
            r.id,
            from_entry(&orders("u1"), &entry(4, "2026-11-22T12:00:10Z")).id
        );
        assert!(r.data["instances"].is_array());
    }
}
