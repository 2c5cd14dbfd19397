//! Sample ids, packed: one text buffer and an end offset per id. A data set of 50 000
//! samples that names none keeps its ids ("0" … "49999") in about 5 bytes a sample (the
//! offsets of decimal indices are computed, not stored); named ids take their text plus
//! 8 bytes, where a `Vec<String>` takes about 56.

use std::ops::Index;

/// One id per sample, in sample order.
#[derive(Debug, Clone, Default)]
pub struct Ids {
    text: String,
    ends: Ends,
}

/// Where each id ends in the text.
#[derive(Debug, Clone)]
enum Ends {
    /// The text is the decimal indices `0`, `1`, … of this many samples, back to back.
    Decimal(usize),
    /// One end offset per id.
    Stored(Vec<usize>),
}

impl Default for Ends {
    fn default() -> Ends {
        Ends::Stored(Vec::new())
    }
}

/// Characters of the decimal numbers `0..i` written back to back.
fn decimal_chars_before(i: usize) -> usize {
    let (mut total, mut lo, mut digits) = (0usize, 0usize, 1usize);
    loop {
        let hi = lo.saturating_mul(10).max(10);
        if i <= hi {
            return total + (i - lo) * digits;
        }
        total += (hi - lo) * digits;
        lo = hi;
        digits += 1;
    }
}

impl Ids {
    /// No ids.
    pub fn new() -> Ids {
        Ids::default()
    }

    /// The sample indices `"0"`, `"1"`, … `"n-1"`: the ids of data that names none.
    pub fn indices(n: usize) -> Ids {
        let mut text = String::with_capacity(decimal_chars_before(n));
        for i in 0..n {
            use std::fmt::Write;
            let _ = write!(text, "{i}");
        }
        Ids {
            text,
            ends: Ends::Decimal(n),
        }
    }

    /// Adds `id` after the last one.
    pub fn push(&mut self, id: &str) {
        if let Ends::Decimal(n) = self.ends {
            self.ends = Ends::Stored((1..=n).map(decimal_chars_before).collect());
        }
        self.text.push_str(id);
        if let Ends::Stored(ends) = &mut self.ends {
            ends.push(self.text.len());
        }
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        match &self.ends {
            Ends::Decimal(n) => *n,
            Ends::Stored(ends) => ends.len(),
        }
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Id `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&str> {
        let (start, end) = match &self.ends {
            Ends::Decimal(n) => {
                if i >= *n {
                    return None;
                }
                (decimal_chars_before(i), decimal_chars_before(i + 1))
            }
            Ends::Stored(ends) => {
                let end = *ends.get(i)?;
                (if i == 0 { 0 } else { ends[i - 1] }, end)
            }
        };
        Some(&self.text[start..end])
    }

    /// Every id, in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        (0..self.len()).map(move |i| &self[i])
    }

    /// The ids at positions `idx`, in that order.
    pub fn select(&self, idx: &[usize]) -> Ids {
        idx.iter().map(|&i| &self[i]).collect()
    }

    /// The ids as owned strings (for arrays and files that need them).
    pub fn to_vec(&self) -> Vec<String> {
        self.iter().map(str::to_string).collect()
    }
}

impl Index<usize> for Ids {
    type Output = str;

    fn index(&self, i: usize) -> &str {
        match self.get(i) {
            Some(id) => id,
            None => panic!("sample {i} is past the {} ids", self.len()),
        }
    }
}

/// Equal when they hold the same ids in the same order, however the offsets are kept.
impl PartialEq for Ids {
    fn eq(&self, other: &Ids) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for Ids {}

impl<S: AsRef<str>> FromIterator<S> for Ids {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Ids {
        let mut ids = Ids::new();
        for id in iter {
            ids.push(id.as_ref());
        }
        ids
    }
}

impl From<Vec<String>> for Ids {
    fn from(v: Vec<String>) -> Ids {
        v.iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_read_back_as_their_decimal_text() {
        for n in [0usize, 1, 9, 10, 11, 1001] {
            let ids = Ids::indices(n);
            assert_eq!(ids.len(), n);
            let want: Vec<String> = (0..n).map(|i| i.to_string()).collect();
            assert_eq!(ids.to_vec(), want);
        }
    }

    #[test]
    fn decimal_offsets_match_the_written_text() {
        for i in [0usize, 1, 9, 10, 11, 99, 100, 101, 12_345, 1_000_000] {
            let written: usize = (0..i).map(|j| j.to_string().len()).sum();
            assert_eq!(decimal_chars_before(i), written, "{i}");
        }
        // Pushing after generated indices keeps every id.
        let mut ids = Ids::indices(12);
        ids.push("x");
        let mut want: Vec<String> = (0..12).map(|i| i.to_string()).collect();
        want.push("x".into());
        assert_eq!(ids.to_vec(), want);
        assert_eq!(ids, Ids::from(want));
        assert_eq!(ids.get(13), None);
    }

    #[test]
    fn named_ids_select() {
        let ids: Ids = ["a", "", "ccc", "dd"].into_iter().collect();
        assert_eq!(ids.len(), 4);
        assert_eq!(&ids[1], "");
        assert_eq!(ids.get(4), None);
        assert_eq!(ids.select(&[3, 0, 3]).to_vec(), vec!["dd", "a", "dd"]);
        assert_eq!(Ids::from(ids.to_vec()), ids);
    }
}
