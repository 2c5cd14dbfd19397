//! Batches of arrays left in their files are checked against the memory limit before they
//! are allocated (a file's rows can be any size). Its own test binary: the limit is one
//! setting of the process.

#![allow(clippy::unwrap_used)]

use std::io::Write;

use qgate_core::{Array, ArrayData};
use qgate_data::npy::encode_npy;
use qgate_data::{ArrayKeys, Dataset, ImagePreprocess};

#[test]
fn a_batch_past_the_memory_limit_is_an_error_naming_the_file() {
    assert!(qgate_core::memory::set_limit(1 << 20));
    let dir = tempfile::tempdir().unwrap();
    // 80 rows of 256 KiB: 20 MiB, left in the file; 4 rows fit in 1 MiB, 8 do not.
    let (rows, width) = (80, 65536);
    let x: Vec<f32> = (0..rows * width).map(|i| (i % 251) as f32).collect();
    let x = Array::new(vec![rows, width], ArrayData::F32(x)).unwrap();
    let npy = dir.path().join("wide.npy");
    std::fs::write(&npy, encode_npy(&x)).unwrap();
    let deflated = dir.path().join("wide.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&deflated).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    zip.start_file("x.npy", opts).unwrap();
    zip.write_all(&encode_npy(&x)).unwrap();
    zip.finish().unwrap();
    for (path, name) in [(&npy, "wide"), (&deflated, "x")] {
        let ds = Dataset::load(path, &ArrayKeys::default(), &ImagePreprocess::default()).unwrap();
        assert!(ds.stored.contains_key(name), "{:?}", ds.stored.keys());
        assert_eq!(
            ds.read_rows(name, &[0, 1, 2]).unwrap(),
            x.select_rows(&[0, 1, 2])
        );
        let err = ds
            .read_rows(name, &(0..8).collect::<Vec<_>>())
            .unwrap_err()
            .to_string();
        let file = path.file_name().unwrap().to_str().unwrap();
        assert!(
            err.contains(file) && err.contains("a batch of 8 rows") && err.contains("--max-memory"),
            "{err}"
        );
    }
}
