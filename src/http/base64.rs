//! Base64 of an answer's patch, copying what repeats instead of encoding it again.
//!
//! The containers of a Pod usually get the same list of variables, so a patch repeats the
//! first container's list for the others; the patch's writer notes where
//! ([`Repeat`], aligned with its source modulo 3). Three input bytes make four output
//! characters, so a repeat that starts at the same offset modulo 3 as its source encodes to
//! the same characters, group for group: those groups are copied from the source's output.
//! For S2 (3 containers × 657 variables, a 110 KB patch) that is two thirds of the encoding
//! (issue 16, BENCHMARKS.md). A repeat that does not hold that promise (out of range,
//! misaligned, overlapping what was already written, a source after its repeat) is encoded
//! like any other bytes, so the output is always the base64 of the input.

use std::io::{self, Write};
use std::ops::Range;

use crate::admission::patch::Repeat;

/// Input bytes encoded per step: a multiple of 3, so only the last step pads.
const CHUNK: usize = 3 * 1024;

/// Writes the standard base64 (padded) of `input` to `writer`, copying the groups of each
/// repeat in `repeats` from its source's output.
pub fn write_base64<W: Write + ?Sized>(
    writer: &mut W,
    input: &[u8],
    repeats: &[Repeat],
) -> io::Result<()> {
    let mut encoder = Encoder {
        writer,
        input,
        done: 0,
        stage: [0; CHUNK / 3 * 4],
    };
    // The output of the last source, kept for its repeats: (its input range, its base64).
    let mut kept: Option<(Range<usize>, Vec<u8>)> = None;
    for repeat in repeats {
        let Some((source, target)) = groups(repeat, input.len()) else {
            continue;
        };
        if target.start < encoder.done {
            continue;
        }
        let have = kept.as_ref().is_some_and(|(range, _)| *range == source);
        if !have {
            if source.start < encoder.done {
                continue;
            }
            encoder.encode_to(source.start)?;
            let mut output = Vec::new();
            encoder.encode_into(&mut output, source.end);
            encoder.writer.write_all(&output)?;
            kept = Some((source.clone(), output));
        }
        debug_assert_eq!(
            input[source.clone()],
            input[target.clone()],
            "a repeat repeats its source"
        );
        encoder.encode_to(target.start)?;
        if let Some((_, output)) = &kept {
            encoder.writer.write_all(output)?;
        }
        encoder.done = target.end;
    }
    encoder.encode_to(input.len())
}

/// A repeat's whole groups of three: the source's and the target's input ranges, of equal
/// length, both starting at a multiple of 3; `None` when the repeat is unusable or holds no
/// whole group.
fn groups(repeat: &Repeat, len: usize) -> Option<(Range<usize>, Range<usize>)> {
    let source = &repeat.source;
    let length = source.end.checked_sub(source.start)?;
    let end = repeat.at.checked_add(length)?;
    if source.end > repeat.at || end > len || source.start % 3 != repeat.at % 3 {
        return None;
    }
    let skip = source.start.next_multiple_of(3) - source.start;
    let whole = length.checked_sub(skip)? / 3 * 3;
    if whole == 0 {
        return None;
    }
    let from = source.start + skip;
    let to = repeat.at + skip;
    Some((from..from + whole, to..to + whole))
}

/// Encodes the input from `done` on, a chunk at a time through a stack buffer.
struct Encoder<'a, W: Write + ?Sized> {
    writer: &'a mut W,
    input: &'a [u8],
    /// Input bytes already written (a multiple of 3 but at the very end).
    done: usize,
    stage: [u8; CHUNK / 3 * 4],
}

impl<W: Write + ?Sized> Encoder<'_, W> {
    /// Writes the base64 of `input[done..to]`.
    fn encode_to(&mut self, to: usize) -> io::Result<()> {
        let encoder = base64_simd::STANDARD;
        let input = self.input;
        for chunk in input[self.done..to].chunks(CHUNK) {
            let encoded = encoder.encode(chunk, base64_simd::Out::from_slice(&mut self.stage));
            self.writer.write_all(encoded)?;
        }
        self.done = to;
        Ok(())
    }

    /// Appends the base64 of `input[done..to]` to `output` instead of writing it.
    fn encode_into(&mut self, output: &mut Vec<u8>, to: usize) {
        base64_simd::STANDARD.encode_append(&self.input[self.done..to], output);
        self.done = to;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(input: &[u8], repeats: &[Repeat]) -> String {
        let mut out = Vec::new();
        write_base64(&mut out, input, repeats).expect("a Vec takes everything");
        String::from_utf8(out).expect("base64 is ASCII")
    }

    fn plain(input: &[u8]) -> String {
        base64_simd::STANDARD.encode_to_string(input)
    }

    /// Three identical lists, aligned as the patch writer aligns them: the same output as
    /// encoding everything.
    #[test]
    fn aligned_repeats_give_the_plain_encoding() {
        let list = b"{\"name\":\"A_SERVICE_HOST\",\"value\":\"10.0.0.1\"},".repeat(300);
        let mut input = b"[{\"op\":\"add\",\"value\":[".to_vec();
        let source = input.len()..input.len() + list.len();
        input.extend_from_slice(&list);
        let mut repeats = Vec::new();
        for _ in 0..2 {
            input.extend_from_slice(b"]},{\"op\":\"add\",\"value\":[");
            while input.len() % 3 != source.start % 3 {
                input.push(b' ');
            }
            repeats.push(Repeat {
                source: source.clone(),
                at: input.len(),
            });
            input.extend_from_slice(&list);
        }
        input.extend_from_slice(b"]}]");
        assert_eq!(encoded(&input, &repeats), plain(&input));
    }

    /// Repeats that break the promise are encoded like other bytes.
    #[test]
    fn unusable_repeats_are_encoded_normally() {
        let input: Vec<u8> = (0..200u8).collect();
        let bad = [
            // misaligned
            Repeat {
                source: 0..30,
                at: 31,
            },
            // source after its repeat
            Repeat {
                source: 90..120,
                at: 30,
            },
            // beyond the input
            Repeat {
                source: 150..180,
                at: 195,
            },
            // overlapping its source
            Repeat {
                source: 0..60,
                at: 30,
            },
            // empty
            Repeat {
                source: 3..3,
                at: 6,
            },
        ];
        for repeat in &bad {
            assert_eq!(
                encoded(&input, std::slice::from_ref(repeat)),
                plain(&input),
                "{repeat:?}"
            );
        }
        assert_eq!(encoded(&input, &bad), plain(&input));
        assert_eq!(encoded(&[], &bad), "");
    }

    proptest! {
        /// Whatever the input and wherever the repeats are (in order or not, aligned or not,
        /// in range or not, overlapping or not), the output is the input's base64, as long as
        /// every repeat that is in range repeats its bytes (the writer's promise).
        #[test]
        fn the_output_is_always_the_base64_of_the_input(
            input in proptest::collection::vec(any::<u8>(), 0..20_000),
            claims in proptest::collection::vec(
                (0usize..20_000, 0usize..5_000, 0usize..20_000), 0..4),
        ) {
            let mut input = input;
            let repeats: Vec<Repeat> = claims
                .iter()
                .map(|&(start, len, at)| Repeat { source: start..start + len, at })
                .collect();
            let len = input.len();
            let in_range = |r: &Repeat| r.source.end <= r.at && r.at + r.source.len() <= len;
            for repeat in &repeats {
                if in_range(repeat) {
                    input.copy_within(repeat.source.clone(), repeat.at);
                }
            }
            // A later copy may have overwritten an earlier repeat's bytes: keep true claims.
            let repeats: Vec<Repeat> = repeats
                .into_iter()
                .filter(|r| {
                    !in_range(r) || input[r.source.clone()] == input[r.at..r.at + r.source.len()]
                })
                .collect();
            prop_assert_eq!(encoded(&input, &repeats), plain(&input));
        }

        #[test]
        fn true_repeats_give_the_plain_encoding(
            head in proptest::collection::vec(any::<u8>(), 0..50),
            list in proptest::collection::vec(any::<u8>(), 0..5_000),
            gaps in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..7), 0..4),
            tail in proptest::collection::vec(any::<u8>(), 0..9),
        ) {
            let mut input = head;
            let source = input.len()..input.len() + list.len();
            input.extend_from_slice(&list);
            let mut repeats = Vec::new();
            for gap in &gaps {
                input.extend_from_slice(gap);
                while input.len() % 3 != source.start % 3 {
                    input.push(b' ');
                }
                repeats.push(Repeat { source: source.clone(), at: input.len() });
                input.extend_from_slice(&list);
            }
            input.extend_from_slice(&tail);
            prop_assert_eq!(encoded(&input, &repeats), plain(&input));
        }
    }
}
