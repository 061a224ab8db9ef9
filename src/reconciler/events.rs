//! Kubernetes Events for scaling transitions (kube mode), on the Consumer.

use async_trait::async_trait;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::TransitionSink;
use crate::api::Consumer;
use crate::scaling::Transition;
use crate::scaling::machine::Event as Kind;

pub struct KubeEvents {
    recorder: Recorder,
}

impl KubeEvents {
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: "konsumer".into(),
            instance,
        };
        KubeEvents {
            recorder: Recorder::new(client, reporter),
        }
    }
}

#[async_trait]
impl TransitionSink for KubeEvents {
    async fn publish(&self, consumer: &Consumer, t: &Transition) {
        let partitions: Vec<String> = t.partitions.iter().map(u32::to_string).collect();
        let event = Event {
            type_: if t.event == Kind::Saturated {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: t.event.name().to_string(),
            note: Some(format!(
                "instance {} (partitions {}): {} -> {}: {}",
                t.instance,
                partitions.join(","),
                t.from.as_str(),
                t.to.as_str(),
                t.reason
            )),
            action: "Scale".into(),
            secondary: None,
        };
        if let Err(e) = self
            .recorder
            .publish(&event, &consumer.object_ref(&()))
            .await
        {
            tracing::warn!(consumer = %consumer.key(), error = %crate::store::kube::describe(&e), "cannot record a Kubernetes Event");
        }
    }
}
