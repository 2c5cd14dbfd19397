//! Sample ids, packed: one text buffer and an end offset per id. A data set of 50 000
//! samples keeps its ids ("0" … "49999" when it names none) in about 13 bytes a sample,
//! where a `Vec<String>` takes about 56.

use std::ops::Index;

/// One id per sample, in sample order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    text: String,
    ends: Vec<usize>,
}

impl Ids {
    /// No ids.
    pub fn new() -> Ids {
        Ids::default()
    }

    /// The sample indices `"0"`, `"1"`, … `"n-1"`: the ids of data that names none.
    pub fn indices(n: usize) -> Ids {
        let mut ids = Ids {
            text: String::with_capacity(n * (n.max(1).ilog10() as usize + 1)),
            ends: Vec::with_capacity(n),
        };
        for i in 0..n {
            use std::fmt::Write;
            let _ = write!(ids.text, "{i}");
            ids.ends.push(ids.text.len());
        }
        ids
    }

    /// Adds `id` after the last one.
    pub fn push(&mut self, id: &str) {
        self.text.push_str(id);
        self.ends.push(self.text.len());
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Id `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
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
    fn named_ids_select() {
        let ids: Ids = ["a", "", "ccc", "dd"].into_iter().collect();
        assert_eq!(ids.len(), 4);
        assert_eq!(&ids[1], "");
        assert_eq!(ids.get(4), None);
        assert_eq!(ids.select(&[3, 0, 3]).to_vec(), vec!["dd", "a", "dd"]);
        assert_eq!(Ids::from(ids.to_vec()), ids);
    }
}
