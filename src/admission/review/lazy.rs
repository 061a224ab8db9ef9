//! A workload AdmissionReview read in one pass: the few fields the decision reads
//! are parsed (strictly), everything else is skipped by its brackets and quotes
//! without being parsed. On a 24 KB Pod, most of the body (managedFields, probes,
//! volumes, userInfo, status) is never looked at, which is where serde_json spends
//! most of its time even with `IgnoredAny`.
//!
//! The reader only answers when it is sure to read what serde would: the same
//! `Request<Workload, IgnoredAny>`. Anything unusual (an escape in a key, a
//! struct written as an array, a duplicate field, a number where konsumer reads a
//! label, a type serde would refuse) makes it give up, and the caller parses the
//! body with serde, which also words the error. The one difference: a syntax error
//! *inside a value konsumer skips* (say `tru` deep in managedFields) is not
//! noticed; the values konsumer reads are checked as serde checks them.

use std::borrow::Cow;

use serde::de::IgnoredAny;

use super::{GroupVersionKind, Request, Review};
use crate::inject::workload::{
    Container, EnvVar, Meta, PodSpec, PodTemplate, ResourcesView, Selected, Str, Workload,
    WorkloadSpec, interesting,
};

/// The reader is not sure it reads what serde would; parse with serde.
#[derive(Debug, PartialEq, Eq)]
pub struct Unsure;

type R<T> = Result<T, Unsure>;

/// A workload review as serde would read it, or [`Unsure`].
pub fn read_workload_review(body: &[u8]) -> R<Review<'_, Workload<'_>, IgnoredAny>> {
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
                request = if c.null()? { None } else { Some(c.request()?) };
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

mod swar;

#[cfg(target_arch = "x86_64")]
mod simd;

/// The scans: SIMD where the target has it, eight bytes at a time elsewhere.
#[cfg(target_arch = "x86_64")]
use simd as scan;
#[cfg(not(target_arch = "x86_64"))]
use swar as scan;

/// serde refuses a field given twice.
fn once(seen: &mut bool) -> R<()> {
    if std::mem::replace(seen, true) {
        Err(Unsure)
    } else {
        Ok(())
    }
}

struct Cursor<'a> {
    s: &'a str,
    b: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `body`, which must be UTF-8 as a whole: every
    /// string borrowed from it is then valid UTF-8 too. The check is SIMD
    /// (`simdutf8`): std's `from_utf8` cost about a twelfth of the whole read of a
    /// 24 KB Pod.
    fn new(body: &'a [u8]) -> R<Self> {
        let text = simdutf8::basic::from_utf8(body).map_err(|_| Unsure)?;
        Ok(Cursor {
            s: text,
            b: body,
            pos: 0,
        })
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.b.get(self.pos) {
            self.pos += 1;
        }
    }

    /// The next byte after whitespace, not consumed.
    fn peek(&mut self) -> R<u8> {
        self.ws();
        self.b.get(self.pos).copied().ok_or(Unsure)
    }

    #[inline]
    fn eat(&mut self, byte: u8) -> R<()> {
        // The apiserver writes compact JSON: the byte is almost always next.
        if self.b.get(self.pos) == Some(&byte) {
            self.pos += 1;
            return Ok(());
        }
        if self.peek()? == byte {
            self.pos += 1;
            Ok(())
        } else {
            Err(Unsure)
        }
    }

    fn literal(&mut self, word: &[u8]) -> R<()> {
        let end = self.pos + word.len();
        if self.b.get(self.pos..end) != Some(word) {
            return Err(Unsure);
        }
        // `nullx` is not `null`.
        if self
            .b
            .get(end)
            .is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_')
        {
            return Err(Unsure);
        }
        self.pos = end;
        Ok(())
    }

    /// Consumes a `null` if that is what comes next.
    fn null(&mut self) -> R<bool> {
        if self.peek()? == b'n' {
            self.literal(b"null")?;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// A string without escapes or control characters, borrowed; anything else is
    /// left to serde.
    fn str(&mut self) -> R<&'a str> {
        self.eat(b'"')?;
        let start = self.pos;
        let end = scan::string_stop_at(self.b, start).ok_or(Unsure)?;
        if self.b[end] != b'"' {
            return Err(Unsure);
        }
        self.pos = end + 1;
        self.s.get(start..end).ok_or(Unsure)
    }

    fn string(&mut self) -> R<Str<'a>> {
        Ok(Str(Cow::Borrowed(self.str()?)))
    }

    fn opt_str(&mut self) -> R<Option<Str<'a>>> {
        if self.null()? {
            Ok(None)
        } else {
            self.string().map(Some)
        }
    }

    fn opt_bool(&mut self) -> R<Option<bool>> {
        match self.peek()? {
            b'n' => self.literal(b"null").map(|()| None),
            b't' => self.literal(b"true").map(|()| Some(true)),
            b'f' => self.literal(b"false").map(|()| Some(false)),
            _ => Err(Unsure),
        }
    }

    /// `Option<IgnoredAny>`: whether a non-null value was there.
    fn opt_any(&mut self) -> R<Option<IgnoredAny>> {
        if self.null()? {
            Ok(None)
        } else {
            self.skip().map(|()| Some(IgnoredAny))
        }
    }

    /// Calls `field` for each key of an object, the cursor on its value; the
    /// callback must consume the value.
    fn object(&mut self, mut field: impl FnMut(&mut Self, &'a str) -> R<()>) -> R<()> {
        self.eat(b'{')?;
        if self.peek()? == b'}' {
            self.pos += 1;
            return Ok(());
        }
        loop {
            let key = self.str()?;
            self.eat(b':')?;
            field(self, key)?;
            match self.peek()? {
                b',' => self.pos += 1,
                b'}' => {
                    self.pos += 1;
                    return Ok(());
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// `Option<Vec<T>>` from an array of objects.
    fn opt_list<T>(&mut self, mut item: impl FnMut(&mut Self) -> R<T>) -> R<Option<Vec<T>>> {
        if self.null()? {
            return Ok(None);
        }
        self.eat(b'[')?;
        let mut out = Vec::new();
        if self.peek()? == b']' {
            self.pos += 1;
            return Ok(Some(out));
        }
        loop {
            out.push(item(self)?);
            match self.peek()? {
                b',' => self.pos += 1,
                b']' => {
                    self.pos += 1;
                    return Ok(Some(out));
                }
                _ => return Err(Unsure),
            }
        }
    }

    /// Skips one value by its quotes and brackets, without parsing it.
    fn skip(&mut self) -> R<()> {
        match self.peek()? {
            b'"' => self.skip_string(),
            b'{' | b'[' => self.skip_container(),
            b',' | b':' | b'}' | b']' => Err(Unsure),
            _ => {
                // A number or a literal: up to the next delimiter.
                let rest = &self.b[self.pos..];
                let len = rest
                    .iter()
                    .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\n' | b'\r' | b'\t'))
                    .unwrap_or(rest.len());
                self.pos += len;
                Ok(())
            }
        }
    }

    fn skip_string(&mut self) -> R<()> {
        self.pos = scan::string_end(self.b, self.pos + 1)?;
        Ok(())
    }

    fn skip_container(&mut self) -> R<()> {
        self.pos = scan::container_end(self.b, self.pos)?;
        Ok(())
    }

    fn request(&mut self) -> R<Request<'a, Workload<'a>, IgnoredAny>> {
        self.envelope(
            |c| {
                if c.null()? {
                    Ok(None)
                } else {
                    Ok(Some(c.workload()?))
                }
            },
            |c| c.opt_any(),
        )
    }

    /// The review's `request` as serde reads it, with `object` and `oldObject`
    /// read by the given readers: one envelope for every webhook's reader.
    pub(super) fn envelope<O, Old>(
        &mut self,
        mut read_object: impl FnMut(&mut Self) -> R<Option<O>>,
        mut read_old: impl FnMut(&mut Self) -> R<Option<Old>>,
    ) -> R<Request<'a, O, Old>> {
        let mut uid = None;
        let (mut kind, mut request_kind) = (None, None);
        let (mut namespace, mut name, mut operation) = (None, None, None);
        let mut dry_run = None;
        let (mut object, mut old_object) = (None, None);
        let mut seen = [false; 9];
        self.object(|c, key| {
            match key {
                "uid" => {
                    once(&mut seen[0])?;
                    uid = Some(c.string()?);
                }
                "kind" => {
                    once(&mut seen[1])?;
                    kind = c.opt_gvk()?;
                }
                "requestKind" => {
                    once(&mut seen[2])?;
                    request_kind = c.opt_gvk()?;
                }
                "namespace" => {
                    once(&mut seen[3])?;
                    namespace = c.opt_str()?;
                }
                "name" => {
                    once(&mut seen[4])?;
                    name = c.opt_str()?;
                }
                "operation" => {
                    once(&mut seen[5])?;
                    operation = c.opt_str()?;
                }
                "dryRun" => {
                    once(&mut seen[6])?;
                    dry_run = c.opt_bool()?;
                }
                "object" => {
                    once(&mut seen[7])?;
                    object = read_object(c)?;
                }
                "oldObject" => {
                    once(&mut seen[8])?;
                    old_object = read_old(c)?;
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(Request {
            uid: uid.ok_or(Unsure)?,
            kind,
            request_kind,
            namespace,
            name,
            operation,
            dry_run,
            object,
            old_object,
        })
    }

    fn opt_gvk(&mut self) -> R<Option<GroupVersionKind<'a>>> {
        if self.null()? {
            return Ok(None);
        }
        let mut gvk = GroupVersionKind {
            group: Str::default(),
            version: Str::default(),
            kind: Str::default(),
        };
        let mut seen = [false; 3];
        self.object(|c, key| {
            match key {
                "group" => {
                    once(&mut seen[0])?;
                    gvk.group = c.string()?;
                }
                "version" => {
                    once(&mut seen[1])?;
                    gvk.version = c.string()?;
                }
                "kind" => {
                    once(&mut seen[2])?;
                    gvk.kind = c.string()?;
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(Some(gvk))
    }

    fn workload(&mut self) -> R<Workload<'a>> {
        let mut w = Workload::default();
        let mut seen = [false; 2];
        self.object(|c, key| {
            match key {
                "metadata" => {
                    once(&mut seen[0])?;
                    w.metadata = c.opt_meta()?;
                }
                "spec" => {
                    once(&mut seen[1])?;
                    w.spec = if c.null()? {
                        None
                    } else {
                        Some(c.workload_spec()?)
                    };
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(w)
    }

    fn opt_meta(&mut self) -> R<Option<Meta<'a>>> {
        if self.null()? {
            return Ok(None);
        }
        let mut m = Meta::default();
        let mut seen = [false; 4];
        self.object(|c, key| {
            match key {
                "name" => {
                    once(&mut seen[0])?;
                    m.name = c.opt_str()?;
                }
                "deletionTimestamp" => {
                    once(&mut seen[1])?;
                    m.deletion_timestamp = c.opt_any()?;
                }
                "labels" => {
                    once(&mut seen[2])?;
                    m.labels = c.opt_selected()?;
                }
                "annotations" => {
                    once(&mut seen[3])?;
                    m.annotations = c.opt_selected()?;
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(Some(m))
    }

    /// A map of which only the keys konsumer reads are kept (string values; a
    /// number or a bool there is left to serde, which writes it as text).
    fn opt_selected(&mut self) -> R<Option<Selected<'a>>> {
        if self.null()? {
            return Ok(None);
        }
        let mut entries = Vec::new();
        self.object(|c, key| {
            if interesting(key) {
                let value = c.opt_str()?;
                entries.push((Str(Cow::Borrowed(key)), value));
            } else {
                c.skip()?;
            }
            Ok(())
        })?;
        Ok(Some(Selected::from_entries(entries)))
    }

    fn workload_spec(&mut self) -> R<WorkloadSpec<'a>> {
        let mut s = WorkloadSpec::default();
        let mut seen = [false; 3];
        self.object(|c, key| {
            match key {
                "containers" => {
                    once(&mut seen[0])?;
                    s.containers = c.opt_list(Self::container)?;
                }
                "initContainers" => {
                    once(&mut seen[1])?;
                    s.init_containers = c.opt_list(Self::container)?;
                }
                "template" => {
                    once(&mut seen[2])?;
                    s.template = if c.null()? {
                        None
                    } else {
                        Some(c.pod_template()?)
                    };
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(s)
    }

    fn pod_template(&mut self) -> R<PodTemplate<'a>> {
        let mut t = PodTemplate::default();
        let mut seen = [false; 2];
        self.object(|c, key| {
            match key {
                "metadata" => {
                    once(&mut seen[0])?;
                    t.metadata = c.opt_meta()?;
                }
                "spec" => {
                    once(&mut seen[1])?;
                    t.spec = if c.null()? { None } else { Some(c.pod_spec()?) };
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(t)
    }

    fn pod_spec(&mut self) -> R<PodSpec<'a>> {
        let mut s = PodSpec::default();
        let mut seen = [false; 2];
        self.object(|c, key| {
            match key {
                "containers" => {
                    once(&mut seen[0])?;
                    s.containers = c.opt_list(Self::container)?;
                }
                "initContainers" => {
                    once(&mut seen[1])?;
                    s.init_containers = c.opt_list(Self::container)?;
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(s)
    }

    fn container(&mut self) -> R<Container<'a>> {
        let mut name = Str::default();
        let mut env = None;
        let mut resources = None;
        let mut seen = [false; 3];
        self.object(|c, key| {
            match key {
                "name" => {
                    once(&mut seen[0])?;
                    name = c.string()?;
                }
                "env" => {
                    once(&mut seen[1])?;
                    env = c.opt_list(Self::env_var)?;
                }
                "resources" => {
                    once(&mut seen[2])?;
                    resources = if c.null()? {
                        None
                    } else {
                        Some(c.resources()?)
                    };
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(Container {
            name,
            env,
            resources,
        })
    }

    fn env_var(&mut self) -> R<EnvVar<'a>> {
        let mut e = EnvVar {
            name: Str::default(),
            value: None,
            value_from: None,
        };
        let mut seen = [false; 3];
        self.object(|c, key| {
            match key {
                "name" => {
                    once(&mut seen[0])?;
                    e.name = c.string()?;
                }
                "value" => {
                    once(&mut seen[1])?;
                    e.value = c.opt_str()?;
                }
                "valueFrom" => {
                    once(&mut seen[2])?;
                    e.value_from = c.opt_any()?;
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(e)
    }

    fn resources(&mut self) -> R<ResourcesView<'a>> {
        let mut r = ResourcesView::default();
        let mut seen = [false; 2];
        self.object(|c, key| {
            match key {
                "requests" => {
                    once(&mut seen[0])?;
                    r.requests = c.opt_selected()?;
                }
                "limits" => {
                    once(&mut seen[1])?;
                    r.limits = c.opt_selected()?;
                }
                _ => c.skip()?,
            }
            Ok(())
        })?;
        Ok(r)
    }
}

pub mod consumer;

#[cfg(test)]
mod tests {
    use super::*;

    fn both(json: &str) -> (String, String) {
        let fast = read_workload_review(json.as_bytes()).map(|r| format!("{r:?}"));
        let full = serde_json::from_str::<Review<Workload, IgnoredAny>>(json)
            .map(|r| format!("{r:?}"))
            .map_err(|_| Unsure);
        (
            fast.unwrap_or_else(|_| "unsure".into()),
            full.unwrap_or_else(|_| "error".into()),
        )
    }

    #[test]
    fn reads_what_serde_reads_from_every_captured_workload_review() {
        for entry in std::fs::read_dir("tests/fixtures/admission").unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().to_string();
            if !(name.starts_with("pod-") || name.starts_with("deployment-")) {
                continue;
            }
            let body = std::fs::read_to_string(&path).unwrap();
            let (fast, full) = both(&body);
            assert_eq!(fast, full, "{name}");
        }
    }

    #[test]
    fn gives_up_where_serde_would_refuse_or_convert() {
        for json in [
            r#"{"request":{"uid":"u","uid":"v"}}"#,
            r#"{"request":{"kind":{"kind":"Pod"}}}"#,
            r#"{"request":{"uid":"u","dryRun":"yes"}}"#,
            r#"{"request":{"uid":"u","object":{"metadata":{"labels":{"konsumerator.lwolf.org/instance":2}}}}}"#,
            r#"{"request":{"uid":"u","object":{"metadata":[]}}}"#,
            r#"{"request":{"u\u0069d":"u"}}"#,
            r#"{"request":{"uid":"a\"b"}}"#,
            r#"{"request":{"uid":"u"}} x"#,
            r#"{"request":{"uid":"u","object":{"spec":{"containers":[{"name":null}]}}}}"#,
            r#"{"request":{"uid":"u""#,
        ] {
            assert!(read_workload_review(json.as_bytes()).is_err(), "{json}");
        }
    }

    #[test]
    fn a_syntax_error_inside_a_skipped_value_goes_unnoticed_and_nowhere_else() {
        // The one difference from serde, by design: values konsumer never reads are
        // not parsed. The apiserver never sends such a body.
        let skipped = r#"{"request":{"uid":"u","userInfo":{"extra":tru}}}"#;
        assert!(serde_json::from_str::<Review<Workload, IgnoredAny>>(skipped).is_err());
        assert!(read_workload_review(skipped.as_bytes()).is_ok());
        // Where konsumer reads, it is as strict as serde.
        let read = r#"{"request":{"uid":"u","dryRun":tru}}"#;
        assert!(read_workload_review(read.as_bytes()).is_err());
    }

    #[test]
    fn gives_up_on_a_body_that_is_not_utf8_wherever_the_bad_bytes_are() {
        let good = r#"{"request":{"uid":"u","userInfo":{"username":"ab"},"object":{"metadata":{"name":"cd"}}}}"#;
        assert!(read_workload_review(good.as_bytes()).is_ok());
        // In a skipped value, in a kept string, split across the 64-byte blocks
        // the SIMD check reads, a lone continuation byte, a truncated sequence, an
        // overlong encoding and a surrogate.
        for bad in [
            &[0xFFu8][..],
            &[0x80],
            &[0xE2, 0x82],
            &[0xC0, 0xAF],
            &[0xED, 0xA0, 0x80],
        ] {
            for at in [good.find("ab").unwrap(), good.find("cd").unwrap()] {
                let mut body = good.as_bytes()[..at].to_vec();
                body.extend_from_slice(bad);
                body.extend_from_slice(&good.as_bytes()[at..]);
                assert_eq!(
                    read_workload_review(&body).map(|_| ()),
                    Err(Unsure),
                    "{body:?}"
                );
                let mut padded = b" ".repeat(70 - at % 64);
                padded.extend_from_slice(&body);
                assert_eq!(
                    read_workload_review(&padded).map(|_| ()),
                    Err(Unsure),
                    "{padded:?}"
                );
            }
        }
        // Multi-byte UTF-8 is read as it is.
        let accented = good.replace("cd", r"caf\u00e9").replace("ab", "é😀");
        assert!(read_workload_review(accented.as_bytes()).is_err()); // the escape: serde's job
        let plain = good.replace("cd", "café😀");
        let review = read_workload_review(plain.as_bytes()).unwrap();
        let name = review
            .request
            .unwrap()
            .object
            .unwrap()
            .metadata
            .unwrap()
            .name;
        assert_eq!(name.as_ref().map(Str::as_str), Some("café😀"));
    }

    #[test]
    fn skips_what_it_does_not_read_whatever_it_holds() {
        let json = r#" {"kind":"AdmissionReview","request":{"userInfo":{"a":["}",{"b":"\"]"}],"n":-1.5e3,"t":true},
            "uid":"u","object":{"metadata":{"labels":{"app":"x\\y","konsumerator.lwolf.org/consumer":"orders"},
            "managedFields":[{"f:spec":{"k:{\"name\":\"c\"}":{}}}]},"spec":{"containers":[{"name":"c","env":[{"name":"A","valueFrom":{"x":null}},{"name":"B","value":null}],
            "resources":{"limits":{"cpu":"1","nvidia.com/gpu":3}}}]}},"oldObject":null,"dryRun":false}} "#;
        let (fast, full) = both(json);
        assert_ne!(fast, "unsure");
        assert_eq!(fast, full);
    }
}
