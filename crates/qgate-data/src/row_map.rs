//! Each sample's row in its file. Until `--limit`/`--seed` select rows the map is the
//! identity and holds no per-sample memory (a `Vec<usize>` would take 8 bytes a sample).

/// Sample index → row of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowMap {
    /// Sample `i` is row `i`, for this many samples.
    Identity(usize),
    /// Sample `i` is row `rows[i]`.
    Selected(Vec<usize>),
}

impl RowMap {
    /// The file row of sample `i`. Panics past the last sample, as indexing does.
    pub fn file_row(&self, i: usize) -> usize {
        match self {
            RowMap::Identity(n) => {
                assert!(i < *n, "sample {i} is past the {n} samples");
                i
            }
            RowMap::Selected(rows) => rows[i],
        }
    }

    /// The file rows of samples `idx`, in that order.
    pub fn file_rows(&self, idx: &[usize]) -> Vec<usize> {
        idx.iter().map(|&i| self.file_row(i)).collect()
    }

    /// The map of the samples at `idx` (a selection of this map's samples).
    pub fn select(&self, idx: &[usize]) -> RowMap {
        RowMap::Selected(self.file_rows(idx))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_compose() {
        let all = RowMap::Identity(6);
        assert_eq!(all.file_rows(&[0, 5]), vec![0, 5]);
        let some = all.select(&[4, 1, 3]);
        assert_eq!(some, RowMap::Selected(vec![4, 1, 3]));
        assert_eq!(some.select(&[2, 0]).file_rows(&[0, 1]), vec![3, 4]);
    }

    #[test]
    #[should_panic(expected = "past the 2 samples")]
    fn identity_past_the_end_panics() {
        RowMap::Identity(2).file_row(2);
    }
}
