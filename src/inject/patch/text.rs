//! The patch written as the JSON text the webhook sends, straight from the
//! decision: no `PatchOperation` or `serde_json::Value` per operation. The bytes are
//! those serde_json writes for json-patch's types (tested against it).

use super::{Op, Ops, Val};
use crate::inject::Resources;

/// A JSON Patch document being written.
#[derive(Debug)]
pub struct PatchText {
    bytes: Vec<u8>,
    len: usize,
}

impl Default for PatchText {
    fn default() -> Self {
        // A large Pod's patch is about 2 KB: one allocation, seldom regrown.
        PatchText {
            bytes: Vec::with_capacity(2048),
            len: 0,
        }
    }
}

impl PatchText {
    /// The document (`[]` when there is no operation).
    pub fn into_bytes(mut self) -> Vec<u8> {
        if self.len == 0 {
            self.bytes.push(b'[');
        }
        self.bytes.push(b']');
        self.bytes
    }
}

impl Ops for PatchText {
    fn push(&mut self, op: Op, path: &str, value: Option<Val<'_>>) {
        let out = &mut self.bytes;
        out.extend_from_slice(if self.len == 0 { b"[" } else { b"," });
        out.extend_from_slice(match op {
            Op::Add => b"{\"op\":\"add\",\"path\":",
            Op::Replace => b"{\"op\":\"replace\",\"path\":",
            Op::Remove => b"{\"op\":\"remove\",\"path\":",
        });
        string(out, path);
        if let Some(value) = value {
            out.extend_from_slice(b",\"value\":");
            write_val(out, value);
        }
        out.push(b'}');
        self.len += 1;
    }

    fn len(&self) -> usize {
        self.len
    }
}

/// A JSON string as serde_json writes it: only `"`, `\` and control characters escaped.
pub fn string(out: &mut Vec<u8>, s: &str) {
    if plain(s.as_bytes()) {
        out.reserve(s.len() + 2);
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing a string into a Vec cannot fail.
        out.extend_from_slice(b"null");
    }
}

/// Whether `s` has no quote, backslash or control character: eight bytes at a time
/// (a byte at a time cost about a twentieth of a large Pod's decision).
fn plain(s: &[u8]) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    // Each is non-zero exactly when some byte of the word matches.
    let eq = |w: u64, byte: u8| {
        let x = w ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let below_space = |w: u64| w.wrapping_sub(ONES * 0x20) & !w & HIGHS;
    let mut chunks = s.chunks_exact(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        if (eq(w, b'"') | eq(w, b'\\') | below_space(w)) != 0 {
            return false;
        }
    }
    chunks
        .remainder()
        .iter()
        .all(|&b| b >= 0x20 && b != b'"' && b != b'\\')
}

fn write_val(out: &mut Vec<u8>, value: Val<'_>) {
    match value {
        Val::Str(s) => string(out, s),
        Val::Strings(pairs) => strings(out, pairs),
        Val::Annotations(pairs) => {
            out.extend_from_slice(b"{\"annotations\":");
            strings(out, pairs);
            out.push(b'}');
        }
        Val::Env(name, value) => env(out, name, value),
        Val::EnvList(list) => {
            out.push(b'[');
            for (i, (name, value)) in list.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                env(out, name, value);
            }
            out.push(b']');
        }
        Val::Resources(r) => resources(out, r),
        Val::Sides { requests, limits } => {
            // serde_json's map is sorted: "limits" before "requests".
            out.push(b'{');
            let mut first = true;
            for (name, side) in [("limits", limits), ("requests", requests)] {
                if side.is_empty() {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                string(out, name);
                out.push(b':');
                resources(out, side);
            }
            out.push(b'}');
        }
    }
}

/// An object of strings with its keys in order (serde_json's map is a sorted
/// map; a key given twice keeps its last value, as an insert would).
fn strings(out: &mut Vec<u8>, pairs: &[(&str, &str)]) {
    out.push(b'{');
    let mut last: Option<&str> = None;
    let mut first = true;
    // A handful of pairs: the next key in order, found by a scan each time.
    loop {
        let next = pairs
            .iter()
            .enumerate()
            .filter(|(_, (k, _))| last.is_none_or(|l| *k > l))
            .min_by(|(i, (a, _)), (j, (b, _))| a.cmp(b).then(j.cmp(i)));
        let Some((_, (key, value))) = next else { break };
        if !first {
            out.push(b',');
        }
        first = false;
        string(out, key);
        out.push(b':');
        string(out, value);
        last = Some(key);
    }
    out.push(b'}');
}

fn env(out: &mut Vec<u8>, name: &str, value: &str) {
    out.extend_from_slice(b"{\"name\":");
    string(out, name);
    out.extend_from_slice(b",\"value\":");
    string(out, value);
    out.push(b'}');
}

fn resources(out: &mut Vec<u8>, r: &Resources) {
    out.push(b'{');
    let cpu = r.cpu.map(|q| q.cpu_string());
    if let Some(cpu) = &cpu {
        out.extend_from_slice(b"\"cpu\":");
        string(out, cpu);
    }
    if let Some(memory) = r.memory {
        if cpu.is_some() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"memory\":");
        string(out, &memory.memory_string());
    }
    out.push(b'}');
}

/// For the tests: any `Val` is written as serde_json writes its `Value`.
#[cfg(test)]
pub(crate) fn val_bytes(value: Val<'_>) -> Vec<u8> {
    let mut out = Vec::new();
    write_val(&mut out, value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_string_is_escaped_wherever_its_quote_backslash_or_control_character_is() {
        for len in 0..20 {
            for at in 0..len {
                for bad in [b'"', b'\\', 0x00, 0x1F, b'\n'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = bad;
                    assert!(!plain(&bytes), "{bad:#x} at {at} of {len}");
                    let text = String::from_utf8(bytes).unwrap();
                    let mut out = Vec::new();
                    string(&mut out, &text);
                    assert_eq!(out, serde_json::to_vec(&text).unwrap());
                }
            }
            // Bytes next to the stops, and multi-byte UTF-8, are plain.
            for good in [" ", "!", "#", "[", "]", "~", "\u{7f}", "é", "日"] {
                let text = good.repeat(len);
                assert!(plain(text.as_bytes()), "{text:?}");
                let mut out = Vec::new();
                string(&mut out, &text);
                assert_eq!(out, serde_json::to_vec(&text).unwrap());
            }
        }
    }
}
