//! Text-level helpers: reading any of Arrow's string layouts, Python's `str.strip()`, the size
//! caps on texts and jobs, and cutting texts into jobs.

use std::ops::Range;

use arrow::array::{Array, AsArray, LargeStringArray, StringArray, StringViewArray};
use arrow::datatypes::DataType;

/// The most bytes of one text sent to an encoder; a longer text is cut (on a character boundary)
/// to this. Tokenizers keep only the first `max_seq_length` tokens, which fit in far less.
pub const MAX_TEXT_BYTES: usize = 16 << 20;

/// The most text bytes in one job (unless a single text is larger), so that a job always fits
/// in one protocol frame ([`chatspace_proto::frame::MAX_FRAME`]) with room to spare.
pub const MAX_JOB_BYTES: usize = chatspace_proto::frame::MAX_FRAME / 2;

const _: () = assert!(MAX_TEXT_BYTES <= MAX_JOB_BYTES);

/// Whether `dt` is one of Arrow's string types.
pub fn is_string(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

/// A string array in any of Arrow's three layouts, read without copying.
#[derive(Debug, Clone, Copy)]
pub enum Strings<'a> {
    /// `Utf8`.
    Small(&'a StringArray),
    /// `LargeUtf8`.
    Large(&'a LargeStringArray),
    /// `Utf8View`.
    View(&'a StringViewArray),
}

impl<'a> Strings<'a> {
    /// `array` as strings, or `None` when it is not a string array.
    pub fn of(array: &'a dyn Array) -> Option<Self> {
        Some(match array.data_type() {
            DataType::Utf8 => Strings::Small(array.as_string::<i32>()),
            DataType::LargeUtf8 => Strings::Large(array.as_string::<i64>()),
            DataType::Utf8View => Strings::View(array.as_string_view()),
            _ => return None,
        })
    }

    /// The string at `i`, or `None` when it is null.
    pub fn get(&self, i: usize) -> Option<&'a str> {
        match self {
            Strings::Small(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::Large(a) => a.is_valid(i).then(|| a.value(i)),
            Strings::View(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }
}

/// Python's `str.strip()`: Unicode whitespace plus the four ASCII separators `\x1c`..`\x1f`,
/// which Python counts as whitespace and Rust does not (the encoder strips texts the same way).
pub fn strip(text: &str) -> &str {
    text.trim_matches(|c: char| c.is_whitespace() || ('\x1c'..='\x1f').contains(&c))
}

/// The length of the longest prefix of `text` of at most [`MAX_TEXT_BYTES`] bytes that ends on a
/// character boundary.
fn capped_len(text: &str) -> usize {
    if text.len() <= MAX_TEXT_BYTES {
        return text.len();
    }
    let mut end = MAX_TEXT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    end
}

/// `text`, cut to at most [`MAX_TEXT_BYTES`] on a character boundary.
pub fn capped(text: &str) -> &str {
    &text[..capped_len(text)]
}

/// Cuts `text` in place to at most [`MAX_TEXT_BYTES`] on a character boundary.
pub fn cap_in_place(text: &mut String) {
    let end = capped_len(text);
    text.truncate(end);
}

/// Cuts `texts` into consecutive jobs of at most `max_rows` texts and (unless one text alone is
/// larger) at most `max_bytes` bytes of text.
pub fn job_ranges(texts: &[String], max_rows: usize, max_bytes: usize) -> Vec<Range<usize>> {
    let max_rows = max_rows.max(1);
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0usize);
    for (i, t) in texts.iter().enumerate() {
        let full = i - start == max_rows || (i > start && bytes + t.len() > max_bytes);
        if full {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += t.len();
    }
    if start < texts.len() {
        out.push(start..texts.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_texts_are_capped_on_a_char_boundary() {
        let text = "é".repeat(MAX_TEXT_BYTES / 2 + 10);
        let cut = capped(&text);
        assert!(cut.len() <= MAX_TEXT_BYTES && cut.len() > MAX_TEXT_BYTES - 4);
        assert_eq!(capped("short"), "short");
        let mut owned = text.clone();
        cap_in_place(&mut owned);
        assert_eq!(owned, cut);
    }

    #[test]
    fn strip_is_pythons() {
        assert_eq!(strip(" \t\u{3000}a b\x1c\x1f\n"), "a b");
        assert_eq!(strip("\u{a0}"), "");
    }

    #[test]
    fn all_three_string_layouts_read_alike() {
        let small = StringArray::from(vec![Some("a"), None]);
        let large = LargeStringArray::from(vec![Some("a"), None]);
        let view = StringViewArray::from(vec![Some("a"), None]);
        for array in [&small as &dyn Array, &large, &view] {
            let s = Strings::of(array).unwrap();
            assert_eq!((s.get(0), s.get(1)), (Some("a"), None));
        }
        assert!(Strings::of(&arrow::array::Int32Array::from(vec![1])).is_none());
    }

    #[test]
    fn jobs_are_cut_by_rows_and_bytes() {
        let texts: Vec<String> = [3, 3, 3, 10, 1, 1, 1, 1]
            .iter()
            .map(|&n| "x".repeat(n))
            .collect();
        assert_eq!(job_ranges(&texts, 3, 7), vec![0..2, 2..3, 3..4, 4..7, 7..8]);
        assert_eq!(job_ranges(&texts, 100, 1000), vec![0..8]);
        assert!(job_ranges(&[], 3, 7).is_empty());
    }
}
