//! The portable scans, eight bytes at a time: what targets without a SIMD scan
//! use, the reference the SIMD scan is tested against, and its fallback for
//! input that is not JSON (a backslash outside a string).

use super::{R, Unsure};

/// Eight bytes at a time: each function below sets the high bit of every byte of
/// the word that matches. Only the lowest set bit is exact (a borrow can mark a
/// byte above a match), and only the lowest is used: the first match.
const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

fn eq(word: u64, byte: u8) -> u64 {
    let x = word ^ (ONES * u64::from(byte));
    x.wrapping_sub(ONES) & !x & HIGHS
}

fn below(word: u64, n: u8) -> u64 {
    word.wrapping_sub(ONES * u64::from(n)) & !word & HIGHS
}

/// Ends a string being read: a quote, a backslash or a control character.
fn string_stop(word: u64) -> u64 {
    eq(word, b'"') | eq(word, b'\\') | below(word, 0x20)
}

/// Ends a string being skipped: a quote or a backslash.
fn skip_stop(word: u64) -> u64 {
    eq(word, b'"') | eq(word, b'\\')
}

/// A quote or a bracket: clearing bit 5 turns `{` into `[` and `}` into `]`.
fn structure(word: u64) -> u64 {
    let folded = word & 0xDFDF_DFDF_DFDF_DFDF;
    eq(word, b'"') | eq(folded, b'[') | eq(folded, b']')
}

/// The first index at or after `from` where `mask` (or, for the last bytes,
/// `one`) matches.
#[inline(always)]
fn find(b: &[u8], from: usize, mask: fn(u64) -> u64, one: fn(u8) -> bool) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let m = mask(u64::from_le_bytes(word));
        if m != 0 {
            return Some(i + (m.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?.iter().position(|c| one(*c)).map(|p| i + p)
}

/// serde_json refuses more than 128 levels; well below that, the reader lets it
/// decide.
pub(super) const MAX_DEPTH: u32 = 64;

/// The first quote, backslash or control character at or after `from`.
pub(super) fn string_stop_at(b: &[u8], from: usize) -> Option<usize> {
    find(b, from, string_stop, |c| {
        c == b'"' || c == b'\\' || c < 0x20
    })
}

/// Where a string skipped from `from` (just after its opening quote) ends: just
/// after its closing quote.
pub(super) fn string_end(b: &[u8], from: usize) -> R<usize> {
    let mut pos = from;
    loop {
        let at = find(b, pos, skip_stop, |c| c == b'"' || c == b'\\').ok_or(Unsure)?;
        if b[at] == b'"' {
            return Ok(at + 1);
        }
        pos = at + 2;
    }
}

/// Where the object or array whose opening bracket is at `at` ends: just after
/// its closing bracket, counted by brackets outside strings.
pub(super) fn container_end(b: &[u8], at: usize) -> R<usize> {
    let mut depth = 0u32;
    let mut pos = at;
    loop {
        pos = find(b, pos, structure, |c| {
            matches!(c, b'"' | b'{' | b'[' | b'}' | b']')
        })
        .ok_or(Unsure)?;
        match b[pos] {
            b'"' => pos = string_end(b, pos + 1)?,
            b'{' | b'[' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(Unsure);
                }
                pos += 1;
            }
            _ => {
                depth -= 1;
                pos += 1;
                if depth == 0 {
                    return Ok(pos);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_word_scans_find_the_first_match_at_every_offset() {
        let stops: &[u8] = b"\"\\\n{}[]";
        for &stop in stops {
            for len in 0..40 {
                for at in 0..len {
                    let mut b = vec![b'a'; len];
                    b[at] = stop;
                    // A second match later must not hide the first.
                    if at + 3 < len {
                        b[at + 3] = b'"';
                    }
                    let want = |f: fn(u8) -> bool| b.iter().position(|c| f(*c));
                    assert_eq!(
                        string_stop_at(&b, 0),
                        want(|c| c == b'"' || c == b'\\' || c < 0x20)
                    );
                    assert_eq!(
                        find(&b, 0, skip_stop, |c| c == b'"' || c == b'\\'),
                        want(|c| c == b'"' || c == b'\\')
                    );
                    let brackets = |c: u8| matches!(c, b'"' | b'{' | b'[' | b'}' | b']');
                    assert_eq!(find(&b, 0, structure, brackets), want(brackets));
                }
            }
        }
        // Bytes that only look alike once folded are no brackets.
        assert_eq!(find(b"{;}=", 1, structure, |c| c == b'}'), Some(2));
        assert_eq!(
            find(&[0x7C, 0x5C, 0xFB, 0xDB], 0, structure, |_| false),
            None
        );
    }
}
