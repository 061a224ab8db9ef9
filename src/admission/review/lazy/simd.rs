//! The skips on x86_64, 64 bytes at a time as simdjson's first stage: per block,
//! bitmasks of quotes, backslashes and brackets (SSE2, which every x86_64 has),
//! the escaped bytes from the backslash runs, the bytes inside strings by a
//! prefix XOR of the unescaped quotes, then brackets outside strings counted by
//! popcount. A block is walked bit by bit only where the depth could reach zero
//! or pass the depth limit, so a skipped value costs a few instructions per
//! block however many short strings and brackets it holds.
//!
//! The answers are the portable scans' (`swar`), position for position, `Unsure`
//! for `Unsure` (property tests below); input where the two ways of reading
//! could differ (a backslash outside a string, never in JSON) is left to them.

use std::arch::x86_64::{
    __m128i, __m256i, _mm_and_si128, _mm_clmulepi64_si128, _mm_cmpeq_epi8, _mm_cvtsi128_si64,
    _mm_loadu_si128, _mm_max_epu8, _mm_movemask_epi8, _mm_or_si128, _mm_set_epi64x, _mm_set1_epi8,
    _mm256_and_si256, _mm256_cmpeq_epi8, _mm256_loadu_si256, _mm256_movemask_epi8,
    _mm256_set1_epi8,
};

use super::swar::{self, MAX_DEPTH};
use super::{R, Unsure};

const BLOCK: usize = 64;

/// Bit `i` of each mask is byte `i` of the block.
struct Masks {
    quote: u64,
    backslash: u64,
    open: u64,
    close: u64,
}

#[target_feature(enable = "sse2")]
fn splat(byte: u8) -> __m128i {
    _mm_set1_epi8(byte as i8)
}

#[target_feature(enable = "sse2")]
fn load(bytes: &[u8; 16]) -> __m128i {
    // SAFETY: the 16 bytes read are `bytes`; `_mm_loadu_si128` has no alignment
    // requirement.
    unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
}

#[target_feature(enable = "sse2")]
fn bits(matches: __m128i) -> u64 {
    u64::from(_mm_movemask_epi8(matches) as u16)
}

/// The block at `i`, or what is left of `b` there padded with zero bytes (a zero
/// byte is neither a quote, a backslash nor a bracket).
#[inline(always)]
fn block<'a>(b: &'a [u8], i: usize, pad: &'a mut [u8; BLOCK]) -> &'a [u8; BLOCK] {
    if let Some(Ok(full)) = b.get(i..i + BLOCK).map(<&[u8; BLOCK]>::try_from) {
        return full;
    }
    let rest = b.get(i..).unwrap_or_default();
    pad[..rest.len()].copy_from_slice(rest);
    pad
}

/// How a block's masks are computed: SSE2 on every x86_64, AVX2 (with POPCNT for
/// the bracket counts and PCLMULQDQ for the prefix XOR) where the CPU has it.
trait Lanes: Copy {
    fn masks(self, chunk: &[u8; BLOCK], brackets: bool) -> Masks;

    fn prefix_xor(self, x: u64) -> u64 {
        prefix_xor(x)
    }
}

#[derive(Clone, Copy)]
struct Sse2;

impl Lanes for Sse2 {
    #[inline(always)]
    fn masks(self, chunk: &[u8; BLOCK], brackets: bool) -> Masks {
        // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
        unsafe { masks_sse2(chunk, brackets) }
    }
}

/// Proof that this CPU has AVX2, POPCNT and PCLMULQDQ: only [`Avx2::detect`]
/// makes one.
#[derive(Clone, Copy)]
struct Avx2(());

impl Avx2 {
    fn detect() -> Option<Self> {
        let has = is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("popcnt")
            && is_x86_feature_detected!("pclmulqdq");
        has.then_some(Avx2(()))
    }
}

impl Lanes for Avx2 {
    #[inline(always)]
    fn masks(self, chunk: &[u8; BLOCK], brackets: bool) -> Masks {
        // SAFETY: an `Avx2` exists only where the CPU has AVX2 (`Avx2::detect`).
        unsafe { masks_avx2(chunk, brackets) }
    }

    #[inline(always)]
    fn prefix_xor(self, x: u64) -> u64 {
        // SAFETY: an `Avx2` exists only where the CPU has PCLMULQDQ (`Avx2::detect`).
        unsafe { prefix_xor_clmul(x) }
    }
}

#[target_feature(enable = "avx2")]
fn masks_avx2(chunk: &[u8; BLOCK], brackets: bool) -> Masks {
    let mut m = Masks {
        quote: 0,
        backslash: 0,
        open: 0,
        close: 0,
    };
    let splat = |byte: u8| _mm256_set1_epi8(byte as i8);
    let bits = |matches: __m256i| u64::from(_mm256_movemask_epi8(matches) as u32);
    for (k, part) in chunk.as_chunks::<32>().0.iter().enumerate() {
        // SAFETY: the 32 bytes read are `part`; `_mm256_loadu_si256` has no
        // alignment requirement.
        let v = unsafe { _mm256_loadu_si256(part.as_ptr().cast()) };
        let shift = 32 * k;
        m.quote |= bits(_mm256_cmpeq_epi8(v, splat(b'"'))) << shift;
        m.backslash |= bits(_mm256_cmpeq_epi8(v, splat(b'\\'))) << shift;
        if brackets {
            let folded = _mm256_and_si256(v, splat(0xDF));
            m.open |= bits(_mm256_cmpeq_epi8(folded, splat(b'['))) << shift;
            m.close |= bits(_mm256_cmpeq_epi8(folded, splat(b']'))) << shift;
        }
    }
    m
}

/// The prefix XOR as one carry-less multiplication by all ones.
#[target_feature(enable = "pclmulqdq")]
fn prefix_xor_clmul(x: u64) -> u64 {
    let product = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1), 0);
    _mm_cvtsi128_si64(product) as u64
}

#[target_feature(enable = "sse2")]
fn masks_sse2(chunk: &[u8; BLOCK], brackets: bool) -> Masks {
    let mut m = Masks {
        quote: 0,
        backslash: 0,
        open: 0,
        close: 0,
    };
    for (k, part) in chunk.as_chunks::<16>().0.iter().enumerate() {
        let v = load(part);
        let shift = 16 * k;
        m.quote |= bits(_mm_cmpeq_epi8(v, splat(b'"'))) << shift;
        m.backslash |= bits(_mm_cmpeq_epi8(v, splat(b'\\'))) << shift;
        if brackets {
            // Clearing bit 5 turns `{` into `[` and `}` into `]`, and nothing
            // else into either.
            let folded = _mm_and_si128(v, splat(0xDF));
            m.open |= bits(_mm_cmpeq_epi8(folded, splat(b'['))) << shift;
            m.close |= bits(_mm_cmpeq_epi8(folded, splat(b']'))) << shift;
        }
    }
    m
}

/// Each bit the XOR of itself and every bit below it: from an opening quote up to
/// (not including) its closing quote.
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

const EVEN: u64 = 0x5555_5555_5555_5555;

/// String state carried from one block to the next.
#[derive(Default)]
struct Strings {
    /// 1 when the block's first byte is escaped by the previous block's last
    /// backslash.
    escaped_in: u64,
    /// All ones when the block starts inside a string.
    inside_in: u64,
}

impl Strings {
    /// The bytes escaped by a backslash: in a run of backslashes, every second
    /// one from its start escapes the byte after it.
    #[inline(always)]
    fn escaped(&mut self, backslash: u64) -> u64 {
        // An escaped backslash escapes nothing.
        let backslash = backslash & !self.escaped_in;
        let follows = (backslash << 1) | self.escaped_in;
        // Runs that start on an odd bit: adding the start bit to the run clears it
        // and carries into the byte after it, which flips the parity of the
        // escaped bytes below.
        let odd_starts = backslash & !EVEN & !follows;
        let (runs_from_even, carry) = odd_starts.overflowing_add(backslash);
        self.escaped_in = u64::from(carry);
        (EVEN ^ (runs_from_even << 1)) & follows
    }

    /// The bytes inside strings (the opening quote in, the closing one out).
    #[inline(always)]
    fn inside(&mut self, lanes: impl Lanes, quote: u64, backslash: u64) -> u64 {
        let quotes = quote & !self.escaped(backslash);
        let inside = lanes.prefix_xor(quotes) ^ self.inside_in;
        self.inside_in = ((inside as i64) >> 63) as u64;
        inside
    }
}

/// The first quote, backslash or control character at or after `from`.
pub(super) fn string_stop_at(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(Ok(chunk)) = b.get(i..i + 16).map(<&[u8; 16]>::try_from) {
        // SAFETY: SSE2 is part of the x86_64 baseline: every x86_64 CPU has it.
        let m = unsafe { string_stops_sse2(chunk) };
        if m != 0 {
            return Some(i + m.trailing_zeros() as usize);
        }
        i += 16;
    }
    swar::string_stop_at(b, i)
}

#[target_feature(enable = "sse2")]
fn string_stops_sse2(chunk: &[u8; 16]) -> u64 {
    let v = load(chunk);
    // Unsigned: the bytes at most 0x1F are those whose maximum with 0x1F is 0x1F.
    let control = _mm_cmpeq_epi8(_mm_max_epu8(v, splat(0x1F)), splat(0x1F));
    let quote_or_backslash = _mm_or_si128(
        _mm_cmpeq_epi8(v, splat(b'"')),
        _mm_cmpeq_epi8(v, splat(b'\\')),
    );
    bits(_mm_or_si128(quote_or_backslash, control))
}

/// Where a string skipped from `from` (just after its opening quote) ends: just
/// after its closing quote.
pub(super) fn string_end(b: &[u8], from: usize) -> R<usize> {
    match Avx2::detect() {
        // SAFETY: `Avx2::detect` found the features `string_end_avx2` is built for.
        Some(lanes) => unsafe { string_end_avx2(lanes, b, from) },
        None => string_end_with(Sse2, b, from),
    }
}

#[target_feature(enable = "avx2,popcnt,pclmulqdq")]
fn string_end_avx2(lanes: Avx2, b: &[u8], from: usize) -> R<usize> {
    string_end_with(lanes, b, from)
}

#[inline(always)]
fn string_end_with(lanes: impl Lanes, b: &[u8], from: usize) -> R<usize> {
    let mut strings = Strings::default();
    let mut i = from;
    let mut pad = [0; BLOCK];
    while i < b.len() {
        let m = lanes.masks(block(b, i, &mut pad), false);
        let closing = m.quote & !strings.escaped(m.backslash);
        if closing != 0 {
            return Ok(i + closing.trailing_zeros() as usize + 1);
        }
        i += BLOCK;
    }
    Err(Unsure)
}

/// Where the object or array whose opening bracket is at `at` ends: just after
/// its closing bracket, counted by brackets outside strings.
pub(super) fn container_end(b: &[u8], at: usize) -> R<usize> {
    match Avx2::detect() {
        // SAFETY: `Avx2::detect` found the features `container_end_avx2` is built for.
        Some(lanes) => unsafe { container_end_avx2(lanes, b, at) },
        None => container_end_with(Sse2, b, at),
    }
}

#[target_feature(enable = "avx2,popcnt,pclmulqdq")]
fn container_end_avx2(lanes: Avx2, b: &[u8], at: usize) -> R<usize> {
    container_end_with(lanes, b, at)
}

#[inline(always)]
fn container_end_with(lanes: impl Lanes, b: &[u8], at: usize) -> R<usize> {
    let mut depth = 1u32;
    let mut strings = Strings::default();
    let mut i = at + 1;
    let mut pad = [0; BLOCK];
    while i < b.len() {
        let m = lanes.masks(block(b, i, &mut pad), true);
        let inside = strings.inside(lanes, m.quote, m.backslash);
        if m.backslash & !inside != 0 {
            return swar::container_end(b, at);
        }
        let opens = m.open & !inside;
        let closes = m.close & !inside;
        let (n_open, n_close) = (opens.count_ones(), closes.count_ones());
        if n_close < depth && depth + n_open <= MAX_DEPTH {
            depth = depth + n_open - n_close;
        } else {
            let mut brackets = opens | closes;
            while brackets != 0 {
                let bit = brackets & brackets.wrapping_neg();
                if opens & bit != 0 {
                    depth += 1;
                    if depth > MAX_DEPTH {
                        return Err(Unsure);
                    }
                } else {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i + bit.trailing_zeros() as usize + 1);
                    }
                }
                brackets ^= bit;
            }
        }
        i += BLOCK;
    }
    Err(Unsure)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::Value;

    use super::*;

    /// Both scans on `b` from `at`: container or string, as the byte there says
    /// (the reader calls them on nothing else).
    /// The SIMD answers (SSE2, and AVX2 where this CPU has it) when they agree,
    /// and the word scan's.
    fn skips(b: &[u8], at: usize) -> (R<usize>, R<usize>) {
        let (sse2, best, slow) = match b.get(at) {
            Some(b'"') => (
                string_end_with(Sse2, b, at + 1),
                string_end(b, at + 1),
                swar::string_end(b, at + 1),
            ),
            Some(b'{' | b'[') => (
                container_end_with(Sse2, b, at),
                container_end(b, at),
                swar::container_end(b, at),
            ),
            _ => return (Ok(at), Ok(at)),
        };
        assert_eq!(
            sse2,
            best,
            "SSE2 and AVX2 disagree on {:?}",
            String::from_utf8_lossy(b)
        );
        (best, slow)
    }

    /// Bytes that matter to a skip, and some that only look alike (`{` and `[`
    /// differ from `;`, `0xFB` and `0xDB` by bit 5 or 7), weighted so that runs of
    /// backslashes, strings and brackets are common.
    fn soup_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            4 => Just(b'\\'),
            3 => Just(b'"'),
            2 => prop::sample::select(b"{}[]".to_vec()),
            2 => prop::sample::select(b"a :,0\n".to_vec()),
            1 => prop::sample::select(vec![0x00, 0x1F, 0x3B, 0x7C, 0x7D, 0xDB, 0xFB, 0xDD, 0xC3, 0xA9]),
        ]
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z]{0,12}",
            "[\"\\\\{}\\[\\]a ]{0,80}",
            "\\PC{0,40}",
            (0usize..70, 0usize..70).prop_map(|(a, b)| format!(
                "{}x{}",
                "\\".repeat(a),
                "\"".repeat(b)
            )),
        ]
    }

    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            text().prop_map(Value::from),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((text(), inner), 0..6)
                    .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    /// `value` written after `pad` spaces (so that block boundaries fall anywhere
    /// in it) and before `tail`.
    fn placed(value: &Value, pretty: bool, pad: usize, tail: &[u8]) -> Vec<u8> {
        let mut b = vec![b' '; pad];
        let text = if pretty {
            serde_json::to_vec_pretty(value)
        } else {
            serde_json::to_vec(value)
        };
        b.extend(text.unwrap_or_default());
        b.extend_from_slice(tail);
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn the_simd_skip_ends_where_the_word_skip_ends_on_any_json(
            value in any_json(), pretty in any::<bool>(), pad in 0usize..70,
            tail in prop::collection::vec(soup_byte(), 0..80),
        ) {
            let b = placed(&value, pretty, pad, &tail);
            let (fast, slow) = skips(&b, pad);
            prop_assert_eq!(&fast, &slow);
            // Valid JSON is skipped to its very end.
            if matches!(value, Value::Object(_) | Value::Array(_) | Value::String(_)) {
                let len = b.len() - tail.len();
                if fast != Err(Unsure) {
                    prop_assert_eq!(fast, Ok(len));
                }
            }
        }

        #[test]
        fn the_simd_skip_gives_up_where_the_word_skip_does_on_truncated_json(
            value in any_json(), pad in 0usize..70, cut in any::<prop::sample::Index>(),
        ) {
            let b = placed(&value, false, pad, b"");
            let b = &b[..cut.index(b.len() + 1)];
            for at in [pad, pad.saturating_sub(1)] {
                let (fast, slow) = skips(b, at);
                prop_assert_eq!(&fast, &slow);
            }
        }

        #[test]
        fn the_simd_skip_agrees_on_any_bytes_of_quotes_backslashes_and_brackets(
            open in prop::sample::select(b"{[\"".to_vec()),
            pad in 0usize..70,
            soup in prop::collection::vec(soup_byte(), 0..400),
        ) {
            let mut b = vec![b'a'; pad];
            b.push(open);
            b.extend(soup);
            let (fast, slow) = skips(&b, pad);
            prop_assert_eq!(&fast, &slow);
        }

        #[test]
        fn the_simd_skip_agrees_on_backslash_runs_across_block_boundaries(
            pad in 0usize..70, runs in prop::collection::vec((0usize..140, 0usize..3, 0usize..70), 1..6),
            close in prop::sample::select(b"\"}]".to_vec()),
        ) {
            // `[ "...\\\\\"...` with runs of any length (odd runs escape the quote
            // after them), strings long enough to cross blocks, then brackets.
            let mut b = vec![b' '; pad];
            b.extend_from_slice(b"[\"");
            for (backslashes, quotes, filler) in runs {
                b.extend(std::iter::repeat_n(b'\\', backslashes));
                b.extend(std::iter::repeat_n(b'"', quotes));
                b.extend(std::iter::repeat_n(b'x', filler));
                b.push(b']');
            }
            b.push(close);
            b.push(b']');
            for at in [pad, pad + 1] {
                let (fast, slow) = skips(&b, at);
                prop_assert_eq!(&fast, &slow);
            }
        }

        #[test]
        fn the_simd_skip_gives_up_at_the_same_depth(
            depth in 55usize..75, pad in 0usize..70,
            middle in prop::collection::vec(soup_byte(), 0..100),
        ) {
            let mut b = vec![b' '; pad];
            b.extend(std::iter::repeat_n(b'[', depth));
            b.extend(middle);
            b.extend(std::iter::repeat_n(b'}', depth));
            let (fast, slow) = skips(&b, pad);
            prop_assert_eq!(&fast, &slow);
        }

        #[test]
        fn the_carry_less_prefix_xor_is_the_shifted_one(x in any::<u64>()) {
            if let Some(avx2) = Avx2::detect() {
                prop_assert_eq!(avx2.prefix_xor(x), prefix_xor(x));
            }
            let bit = |i: u32| (x >> i) & 1;
            let want = (0..64).fold(0u64, |acc, i| acc | (((0..=i).map(bit).sum::<u64>() & 1) << i));
            prop_assert_eq!(prefix_xor(x), want);
        }

        #[test]
        fn the_simd_string_stop_is_the_word_string_stop(
            bytes in prop::collection::vec(any::<u8>(), 0..100), from in 0usize..100,
        ) {
            prop_assert_eq!(string_stop_at(&bytes, from), swar::string_stop_at(&bytes, from));
        }
    }

    #[test]
    fn a_value_nested_exactly_to_the_limit_is_skipped_and_one_deeper_is_not() {
        let limit = MAX_DEPTH as usize;
        for pad in [0, 1, 63, 64] {
            let nested =
                |n: usize| format!("{}{}{}", " ".repeat(pad), "[".repeat(n), "]".repeat(n));
            let at = nested(limit);
            assert_eq!(container_end(at.as_bytes(), pad), Ok(at.len()));
            let deeper = nested(limit + 1);
            assert_eq!(container_end(deeper.as_bytes(), pad), Err(Unsure));
            // A depth passed and left again inside one block is still passed.
            let wave = |outer: usize| {
                let wave = format!(
                    "{}{}[[[[[[]]]]]]{}",
                    " ".repeat(pad),
                    "[".repeat(outer),
                    "]".repeat(outer)
                );
                container_end(wave.as_bytes(), pad).map(|end| end == wave.len())
            };
            assert_eq!(wave(limit - 6), Ok(true));
            assert_eq!(wave(limit - 5), Err(Unsure));
        }
    }

    #[test]
    fn the_escaped_bytes_of_a_block_are_every_second_one_after_a_backslash_run() {
        for run in 0..=BLOCK {
            for start in 0..=BLOCK - run {
                let mut bytes = [b'a'; BLOCK];
                bytes[start..start + run].fill(b'\\');
                let mut strings = Strings::default();
                let m = Sse2.masks(&bytes, false);
                let got = strings.escaped(m.backslash);
                let mut want = 0u64;
                for k in (1..=run).step_by(2) {
                    if start + k < BLOCK {
                        want |= 1 << (start + k);
                    }
                }
                assert_eq!(got, want, "run of {run} at {start}");
                assert_eq!(
                    strings.escaped_in,
                    u64::from(start + run == BLOCK && run % 2 == 1)
                );
            }
        }
    }
}
