//! Where konsumer's CPU per webhook request goes, without HTTP or TLS: the pure steps
//! of `POST /mutate/workloads` on tests/fixtures/admission/pod-create-large.json, and
//! the admission span under the JSON log subscriber. Built and run by
//! `bench/decide.sh` (a throwaway package that depends on this repository's
//! library); best of 5 batches, µs per call.

use std::hint::black_box;
use std::time::Instant;

use konsumer::admission::review::{self, Answer, Review};
use konsumer::inject::workload::Workload;
use konsumer::inject::PatchText;
use konsumer::store::CachedConsumer;
use serde::de::IgnoredAny;

/// Times `f` (best of 5 batches of `n` calls); with `STEP=id` in the environment,
/// only runs the step `id`, `ITERS` + 1 times, untimed (for `valgrind --tool=callgrind`,
/// see `bench/decide.sh`).
fn bench(id: &str, name: &str, n: u32, mut f: impl FnMut()) {
    if let Ok(step) = std::env::var("STEP") {
        if step == id {
            let iters: u32 = std::env::var("ITERS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            // Once more than counted, so one-time work (lazy statics) is in both
            // runs and drops out of the difference.
            for _ in 0..=iters {
                f();
            }
        }
        return;
    }
    for _ in 0..n / 10 {
        f();
    }
    let mut best = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        best = best.min(t.elapsed().as_secs_f64() / f64::from(n) * 1e6);
    }
    println!("| {name} | {best:.1} µs |");
}

fn main() {
    let root = std::env::args()
        .nth(1)
        .expect("usage: decide REPO_ROOT [text|json]");
    let log_format = std::env::args().nth(2).unwrap_or_else(|| "json".into());
    let body = std::fs::read(format!(
        "{root}/tests/fixtures/admission/pod-create-large.json"
    ))
    .expect("pod-create-large.json");
    let yaml = std::fs::read_to_string(format!("{root}/examples/local/orders.yaml"))
        .expect("examples/local/orders.yaml");
    let (consumers, problems) = konsumer::store::local::parse_consumers(&yaml);
    assert!(problems.is_empty(), "{problems:?}");
    let cached = CachedConsumer::new(consumers.into_iter().next().expect("a Consumer"));
    let settings = cached.settings.as_ref().expect("valid settings");
    let n = 20_000;

    println!("| step ({} bytes in) | CPU |", body.len());
    println!("|---|---:|");
    bench("skip", 
        "serde_json: skip the whole body (`IgnoredAny`), the floor of any full parse",
        n,
        || {
            black_box(serde_json::from_slice::<IgnoredAny>(&body).unwrap());
        },
    );
    bench("value", 
        "serde_json: whole body into a `Value` tree, for comparison",
        n / 4,
        || {
            black_box(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
        },
    );
    bench("serde", 
        "konsumer: parse (`Review<Workload, IgnoredAny>`)",
        n,
        || {
            let r: Review<Workload, IgnoredAny> = serde_json::from_slice(&body).unwrap();
            black_box(r);
        },
    );
    bench("lazy", 
        "konsumer: one-pass read (`review::lazy`, what the webhook uses)",
        n,
        || {
            black_box(review::lazy::read_workload_review(&body).unwrap());
        },
    );
    let r: Review<Workload, IgnoredAny> = serde_json::from_slice(&body).unwrap();
    let req = r.request.as_ref().expect("request");
    let object = req.object.as_ref().expect("object");
    bench("decide", 
        "konsumer: `decide_pod` (instance, resources, JSON Patch ops)",
        n,
        || {
            black_box(konsumer::inject::decide_pod(object, settings, 0.8).unwrap());
        },
    );
    let decision = konsumer::inject::decide_pod(object, settings, 0.8).unwrap();
    bench("ops", 
        "konsumer: serialize the patch (`serde_json::to_vec(ops)`)",
        n,
        || {
            black_box(serde_json::to_vec(&decision.mutation.ops).unwrap());
        },
    );
    bench(
        "text",
        "konsumer: `decide_pod` with the patch written as bytes (what the webhook does; replaces the two steps above)",
        n,
        || {
            let d = konsumer::inject::decide_pod_into::<PatchText>(object, settings, 0.8).unwrap();
            black_box(d.mutation.ops.into_bytes());
        },
    );
    let written = konsumer::inject::decide_pod_into::<PatchText>(object, settings, 0.8)
        .unwrap()
        .mutation
        .ops
        .into_bytes();
    assert_eq!(written, serde_json::to_vec(&decision.mutation.ops).unwrap());
    let answer = Answer {
        allowed: true,
        patch: Some(written),
        warnings: decision.mutation.warnings.clone(),
        status: None,
    };
    bench("encode", 
        "konsumer: `review::encode` (base64 patch, AdmissionReview)",
        n,
        || {
            black_box(review::encode(
                "admission.k8s.io/v1",
                req.uid.as_str(),
                &answer,
            ));
        },
    );
    bench(
        "allops",
        "konsumer: read, decide, answer with the patch as json-patch operations serialized by serde (before round 3)",
        n,
        || {
            let r = review::lazy::read_workload_review(&body).unwrap();
            let req = r.request.as_ref().unwrap();
            let d = konsumer::inject::decide_pod(req.object.as_ref().unwrap(), settings, 0.8)
                .unwrap();
            let answer = Answer {
                allowed: true,
                patch: Some(serde_json::to_vec(&d.mutation.ops).unwrap()),
                warnings: d.mutation.warnings,
                status: None,
            };
            black_box(review::encode(
                "admission.k8s.io/v1",
                req.uid.as_str(),
                &answer,
            ));
        },
    );
    bench("all", "konsumer: all of the above (one-pass read)", n, || {
        let r = review::lazy::read_workload_review(&body).unwrap();
        let req = r.request.as_ref().unwrap();
        let d = konsumer::inject::decide_pod_into::<PatchText>(
            req.object.as_ref().unwrap(),
            settings,
            0.8,
        )
        .unwrap();
        let answer = Answer {
            allowed: true,
            patch: Some(d.mutation.ops.into_bytes()),
            warnings: d.mutation.warnings,
            status: None,
        };
        black_box(review::encode(
            "admission.k8s.io/v1",
            req.uid.as_str(),
            &answer,
        ));
    });

    // `POST /validate/consumers` with Konsumerator's README example (v1alpha1 CREATE).
    let vbody = std::fs::read(format!(
        "{root}/tests/fixtures/admission/consumer-v1alpha1-seed-example.validate.json"
    ))
    .expect("consumer-v1alpha1-seed-example.validate.json");
    println!("| validating webhook ({} bytes in) | |", vbody.len());
    bench("vskip", "serde_json: skip the whole body (`IgnoredAny`)", n, || {
        black_box(serde_json::from_slice::<IgnoredAny>(&vbody).unwrap());
    });
    bench("vvalue", "serde_json: whole body into a `Value` tree", n, || {
        black_box(serde_json::from_slice::<serde_json::Value>(&vbody).unwrap());
    });
    let vreview: serde_json::Value = serde_json::from_slice(&vbody).unwrap();
    let vobject = vreview.pointer("/request/object").expect("object").clone();
    bench("vrules", "konsumer: `validation::validate` of the parsed object", n, || {
        black_box(konsumer::validation::validate(&vobject, None, "v1alpha1"));
    });
    bench("vread", "konsumer: one-pass read of the review (`read_consumer_review`)", n, || {
        black_box(review::lazy::consumer::read_consumer_review(&vbody).unwrap());
    });
    let vparts = review::lazy::consumer::read_consumer_review(&vbody)
        .unwrap()
        .request
        .and_then(|r| r.object)
        .expect("the one-pass reader reads the seed example");
    bench("vparts", "konsumer: `validation::validate_parts` of the read object", n, || {
        black_box(konsumer::validation::validate_parts(&vparts, None, "v1alpha1").unwrap());
    });
    bench("vall", "konsumer: `/validate/consumers` whole (read, validate, answer)", n, || {
        black_box(konsumer::admission::consumers::validate(&vbody));
    });

    // The span `admission::workloads::decide` makes: every field at creation,
    // entered while the decision runs, a debug event (filtered out at info).
    let span_work = || {
        let span = tracing::info_span!(
            "admission",
            webhook = "mutate_workloads",
            uid = "b5e7c296-d725-4d26-9db7-713c18dab84b",
            kind = "Pod",
            namespace = "streams",
            object_name = "",
            operation = "CREATE",
            dry_run = false,
            consumer = "orders",
        );
        let _enter = span.enter();
        tracing::debug!(warnings = 1usize, "answered");
    };
    bench("span0", "tracing: the admission span, no subscriber", n, span_work);
    let filter = tracing_subscriber::EnvFilter::new("info");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if log_format == "text" {
        builder.init();
    } else {
        builder.json().flatten_event(true).init();
    }
    bench("span", 
        &format!(
            "tracing: the admission span, `--log-format {log_format}` subscriber at info"
        ),
        n,
        span_work,
    );
}
