//! Kubernetes Events (kube and guest mode), on the Consumer or, in guest mode,
//! on the ConfigMap that holds it. The texts come from [`crate::notice`].

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use super::TransitionSink;
use crate::api::Consumer;
use crate::notice::{self, Notice};
use crate::scaling::Transition;

/// What an Event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Regarding {
    /// The Consumer object itself.
    Consumer,
    /// The guest-mode ConfigMap the Consumer was read from (same name and uid).
    ConfigMap,
}

pub struct KubeEvents {
    recorder: Recorder,
    regarding: Regarding,
}

impl KubeEvents {
    pub fn new(client: kube::Client, instance: Option<String>) -> Self {
        Self::regarding(client, instance, Regarding::Consumer)
    }

    pub fn regarding(client: kube::Client, instance: Option<String>, regarding: Regarding) -> Self {
        let reporter = Reporter {
            controller: "konsumer".into(),
            instance,
        };
        KubeEvents {
            recorder: Recorder::new(client, reporter),
            regarding,
        }
    }

    fn object(&self, consumer: &Consumer, instance: Option<u32>) -> ObjectReference {
        let mut object = self.whole(consumer);
        // An event about one instance points at it, so that the recorder keeps
        // the events of different instances apart.
        object.field_path = instance.map(|i| format!("status.instances{{{i}}}"));
        object
    }

    fn whole(&self, consumer: &Consumer) -> ObjectReference {
        match self.regarding {
            Regarding::Consumer => consumer.object_ref(&()),
            Regarding::ConfigMap => ObjectReference {
                api_version: Some("v1".into()),
                kind: Some("ConfigMap".into()),
                name: consumer.metadata.name.clone(),
                namespace: consumer.metadata.namespace.clone(),
                uid: consumer.metadata.uid.clone(),
                resource_version: None,
                field_path: None,
            },
        }
    }
}

#[async_trait]
impl TransitionSink for KubeEvents {
    async fn publish(&self, consumer: &Consumer, t: &Transition) {
        self.notify(consumer, &notice::transition(t)).await;
    }

    async fn notify(&self, consumer: &Consumer, n: &Notice) {
        let event = Event {
            type_: if n.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: n.reason.clone(),
            note: Some(n.note.clone()),
            action: n.action.clone(),
            secondary: n.deployment.as_ref().map(|name| ObjectReference {
                api_version: Some("apps/v1".into()),
                kind: Some("Deployment".into()),
                name: Some(name.clone()),
                namespace: consumer.metadata.namespace.clone(),
                ..ObjectReference::default()
            }),
        };
        if let Err(e) = self
            .recorder
            .publish(&event, &self.object(consumer, n.instance))
            .await
        {
            tracing::warn!(consumer = %consumer.key(), error = %crate::store::kube::describe(&e), "cannot record a Kubernetes Event");
        }
    }
}
