//! A Consumer AdmissionReview (`/validate/consumers`) read in one pass, with the
//! workload reader's cursor: the envelope as serde reads it, and of `object` and
//! `oldObject` only what validating reads ([`Parts`]: `apiVersion`, metadata's
//! name, namespace and deletion, the text of `spec`). `managedFields`, the
//! last-applied annotation and the rest of the object are skipped unparsed.
//!
//! As with workloads, the reader answers only when it reads what serde would;
//! anything unusual (escapes in what it reads, a duplicate field, a metadata value
//! the type checks would report) makes it [`Unsure`], and the caller takes the
//! serde path. The same one difference: a syntax error inside a skipped value is
//! not noticed (`spec` is parsed in full by the validator).

use super::{Cursor, R, Unsure, once};
use crate::admission::review::{Request, Review};
use crate::validation::Parts;

/// A Consumer review with its objects as [`Parts`].
pub type ConsumerReview<'a> = Review<'a, Parts<'a>, Parts<'a>>;

/// A Consumer review as serde would read it (objects aside), or [`Unsure`].
pub fn read_consumer_review(body: &[u8]) -> R<ConsumerReview<'_>> {
    let mut c = Cursor::new(body)?;
    let mut api_version = None;
    let mut request = None;
    let (mut seen_version, mut seen_request) = (false, false);
    c.object(|c, key| {
        match key {
            "apiVersion" => {
                once(&mut seen_version)?;
                api_version = c.opt_str()?;
            }
            "request" => {
                once(&mut seen_request)?;
                request = if c.null()? {
                    None
                } else {
                    Some(c.consumer_request()?)
                };
            }
            _ => c.skip()?,
        }
        Ok(())
    })?;
    c.ws();
    if c.pos != c.b.len() {
        return Err(Unsure);
    }
    Ok(Review {
        api_version,
        request,
    })
}

impl<'a> Cursor<'a> {
    fn consumer_request(&mut self) -> R<Request<'a, Parts<'a>, Parts<'a>>> {
        self.envelope(|c| c.opt_parts(), |c| c.opt_parts())
    }

    /// The text of the next value, skipped.
    fn raw(&mut self) -> R<&'a str> {
        self.ws();
        let start = self.pos;
        self.skip()?;
        self.s.get(start..self.pos).ok_or(Unsure)
    }

    fn opt_parts(&mut self) -> R<Option<Parts<'a>>> {
        if self.null()? {
            return Ok(None);
        }
        let mut parts = Parts {
            api_version: None,
            name: None,
            namespace: None,
            deleting: false,
            spec: None,
        };
        let mut seen = [false; 3];
        self.object(|c, key| {
            match key {
                "apiVersion" => {
                    once(&mut seen[0])?;
                    // Not a string: `version_of` reads no version, as here.
                    if c.peek()? == b'"' {
                        parts.api_version = Some(c.str()?);
                    } else {
                        c.skip()?;
                    }
                }
                "metadata" => {
                    once(&mut seen[1])?;
                    c.plain_meta(&mut parts)?;
                }
                "spec" => {
                    once(&mut seen[2])?;
                    parts.spec = if c.null()? { None } else { Some(c.raw()?) };
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        // No metadata: the type checks have something to say.
        if !seen[1] {
            return Err(Unsure);
        }
        Ok(Some(parts))
    }

    /// Metadata the type checks pass unchanged (see [`Parts`]), else [`Unsure`].
    fn plain_meta(&mut self, parts: &mut Parts<'a>) -> R<()> {
        let mut seen = [false; 6];
        self.object(|c, key| {
            match key {
                "name" => {
                    once(&mut seen[0])?;
                    parts.name = c.opt_plain_str()?;
                }
                "namespace" => {
                    once(&mut seen[1])?;
                    parts.namespace = c.opt_plain_str()?;
                }
                "generateName" => {
                    once(&mut seen[2])?;
                    c.opt_plain_str()?;
                }
                "labels" => {
                    once(&mut seen[3])?;
                    c.string_map()?;
                }
                "annotations" => {
                    once(&mut seen[4])?;
                    c.string_map()?;
                }
                "deletionTimestamp" => {
                    once(&mut seen[5])?;
                    parts.deleting = !c.null()?;
                    if parts.deleting {
                        c.skip()?;
                    }
                }
                _ => c.skip()?,
            }
            Ok(())
        })
    }

    fn opt_plain_str(&mut self) -> R<Option<&'a str>> {
        if self.null()? {
            Ok(None)
        } else {
            self.str().map(Some)
        }
    }

    /// `null` or a map whose values are all strings (skipped, escapes and all).
    fn string_map(&mut self) -> R<()> {
        if self.null()? {
            return Ok(());
        }
        self.object(|c, _| {
            if c.peek()? == b'"' {
                c.skip_string()
            } else {
                Err(Unsure)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_seed_example_and_skips_managed_fields_and_the_last_applied_annotation() {
        let body =
            std::fs::read("tests/fixtures/admission/consumer-v1alpha1-seed-example.validate.json")
                .unwrap();
        let review = read_consumer_review(&body).unwrap();
        let request = review.request.unwrap();
        let object = request.object.unwrap();
        assert_eq!(object.api_version, Some("konsumerator.lwolf.org/v1alpha1"));
        assert_eq!(object.name, Some("consumer-sample"));
        assert_eq!(object.namespace, Some("default"));
        assert!(!object.deleting);
        let spec: serde_json::Value = serde_json::from_str(object.spec.unwrap()).unwrap();
        let full: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(spec, full["request"]["object"]["spec"]);
        assert!(request.old_object.is_none());
    }

    #[test]
    fn gives_up_on_a_body_that_is_not_utf8() {
        let body =
            std::fs::read("tests/fixtures/admission/consumer-v1alpha1-seed-example.validate.json")
                .unwrap();
        assert!(read_consumer_review(&body).is_ok());
        // Anywhere: the spec is handed on as text.
        for at in [body.len() / 3, body.len() / 2, body.len() - 3] {
            let mut bad = body.clone();
            bad.insert(at, 0xFF);
            assert_eq!(read_consumer_review(&bad).map(|_| ()), Err(Unsure));
        }
    }

    #[test]
    fn gives_up_on_metadata_the_type_checks_would_report() {
        for object in [
            r#"{"spec":{}}"#,
            r#"{"metadata":[],"spec":{}}"#,
            r#"{"metadata":{"name":false},"spec":{}}"#,
            r#"{"metadata":{"labels":{"team":true}},"spec":{}}"#,
            r#"{"metadata":{"annotations":[]},"spec":{}}"#,
            r#"{"metadata":{"name":"a","name":"b"},"spec":{}}"#,
            r#"{"metadata":{"name":"a\u0062"},"spec":{}}"#,
            r#"{"metadata":{},"spec":{},"spec":{}}"#,
        ] {
            let body = format!(r#"{{"request":{{"uid":"u","object":{object}}}}}"#);
            assert_eq!(
                read_consumer_review(body.as_bytes()).map(|_| ()),
                Err(Unsure),
                "{object}"
            );
        }
        let fine = r#"{"request":{"uid":"u","object":{"metadata":{"labels":{"a":"x\"y"},"deletionTimestamp":"2026-01-01T00:00:00Z"},"spec":null}}}"#;
        let object = read_consumer_review(fine.as_bytes())
            .unwrap()
            .request
            .unwrap()
            .object
            .unwrap();
        assert!(object.deleting);
        assert_eq!(object.spec, None);
    }
}
