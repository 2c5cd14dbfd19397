//! Loaders against the files fixtures/gen/generate.py wrote with numpy.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use qgate_core::{ArrayData, Tolerance};
use qgate_data::{ArrayKeys, ColorMode, DataError, Dataset, ImagePreprocess};

#[path = "../../../tests/reference/fixtures.rs"]
mod fixtures_dir;
use fixtures_dir::fixtures;

fn load(name: &str, keys: &ArrayKeys) -> Result<Dataset, DataError> {
    Dataset::load(&fixtures().join(name), keys, &ImagePreprocess::default())
}

#[test]
fn npz_arrays_ids_and_labels() {
    let ds = load("test.npz", &ArrayKeys::default()).unwrap();
    assert_eq!(ds.len(), 540);
    assert_eq!(ds.arrays["x"].shape, vec![540, 64]);
    assert_eq!(ds.arrays["image"].shape, vec![540, 1, 8, 8]);
    assert!(!ds.arrays.contains_key("label") && !ds.arrays.contains_key("id"));
    assert!(
        ds.ids[0].starts_with('d') && ds.ids[0].len() == 5,
        "{}",
        &ds.ids[0]
    );
    assert_eq!(ds.label_key.as_deref(), Some("label"));
    let labels = ds.labels.unwrap();
    assert!(labels.iter().all(|&y| (0..10).contains(&y)));
}

#[test]
fn compressed_npz_equals_stored_npz() {
    let a = load("test.npz", &ArrayKeys::default()).unwrap();
    let mut b = load("test_compressed.npz", &ArrayKeys::default()).unwrap();
    b.source = a.source.clone();
    assert_eq!(a, b);
}

#[test]
fn csv_equals_npz() {
    let npz = load("test.npz", &ArrayKeys::default()).unwrap();
    let csv = load("test.csv", &ArrayKeys::default()).unwrap();
    assert_eq!(csv.ids, npz.ids);
    assert_eq!(csv.labels, npz.labels);
    assert_eq!(csv.arrays["features"], npz.arrays["x"]);
}

#[test]
fn image_folder_equals_numpy_preprocessing() {
    let pre = ImagePreprocess {
        scale: 1.0 / 240.0,
        color: ColorMode::Gray,
        ..ImagePreprocess::default()
    };
    let ds = Dataset::load(&fixtures().join("images"), &ArrayKeys::default(), &pre).unwrap();
    let reference = load("images_ref.npz", &ArrayKeys::default()).unwrap();
    assert_eq!(ds.len(), 50);
    assert_eq!(ds.labels, reference.labels);
    let ref_ids: Vec<String> = reference.ids.to_vec();
    let ids: Vec<String> = ds
        .ids
        .iter()
        .map(|i| i.rsplit('/').next().unwrap().to_string())
        .collect();
    assert_eq!(ids, ref_ids);
    assert_eq!(
        ds.class_names,
        (0..10).map(|c| c.to_string()).collect::<Vec<_>>()
    );
    let (got, want) = (&ds.arrays["image"], &reference.arrays["image"]);
    assert_eq!(got.shape, want.shape);
    for (g, w) in got.to_f64().unwrap().iter().zip(want.to_f64().unwrap()) {
        // numpy divides by 240, qgate multiplies by 1/240: one float32 rounding apart.
        assert!(Tolerance::Float32Reordering.close(*g, w), "{g} vs {w}");
    }
}

#[test]
fn nhwc_rgb_layout_has_three_channels_last() {
    let pre = ImagePreprocess {
        layout: qgate_data::Layout::Nhwc,
        ..ImagePreprocess::default()
    };
    let ds = Dataset::load(&fixtures().join("images"), &ArrayKeys::default(), &pre).unwrap();
    assert_eq!(ds.arrays["image"].shape, vec![50, 8, 8, 3]);
}

#[test]
fn missing_label_key_names_the_key_and_the_file() {
    let keys = ArrayKeys {
        label_key: Some("target_class".into()),
        id_key: None,
    };
    let err = load("test.npz", &keys).unwrap_err().to_string();
    assert!(
        err.contains("target_class") && err.contains("test.npz"),
        "{err}"
    );
    assert!(
        err.contains("image") && err.contains("label"),
        "lists what is there: {err}"
    );
}

#[test]
fn float_labels_are_refused_unless_whole() {
    let keys = ArrayKeys {
        label_key: Some("x".into()),
        id_key: None,
    };
    let err = load("calib.npz", &keys).unwrap_err().to_string();
    assert!(err.contains("'x'"), "{err}");
}

#[test]
fn limit_and_seed_pick_a_reproducible_subset() {
    let mut a = load("test.npz", &ArrayKeys::default()).unwrap();
    let mut b = a.clone();
    a.subset(Some(100), Some(7));
    b.subset(Some(100), Some(7));
    assert_eq!(a.len(), 100);
    assert_eq!(a.ids, b.ids);
    let mut c = load("test.npz", &ArrayKeys::default()).unwrap();
    c.subset(Some(100), None);
    assert_ne!(a.ids, c.ids);
    if let ArrayData::F32(v) = &c.arrays["x"].data {
        assert_eq!(v.len(), 6400);
    }
}

#[test]
fn a_model_file_is_not_a_data_set() {
    let err = load("mlp_fp32.onnx", &ArrayKeys::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown data format"), "{err}");
    let err = load("missing.npz", &ArrayKeys::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("missing.npz"), "{err}");
}

#[test]
fn a_truncated_npz_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(fixtures().join("test.npz")).unwrap();
    let path = dir.path().join("cut.npz");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let err = Dataset::load(&path, &ArrayKeys::default(), &ImagePreprocess::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("cut.npz"), "{err}");
}

#[test]
fn a_text_column_is_set_aside_but_a_broken_number_is_an_error() {
    // test.csv with a `file` column of names in front and a `note` column at the end.
    let text = std::fs::read_to_string(fixtures().join("test.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let mut out = format!("file,{header},note\n");
    for (i, l) in lines.enumerate() {
        out.push_str(&format!("img_{i}.png,{l},looks fine\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("with_text.csv");
    std::fs::write(&path, &out).unwrap();
    let ds = Dataset::load(&path, &ArrayKeys::default(), &ImagePreprocess::default()).unwrap();
    let npz = load("test.npz", &ArrayKeys::default()).unwrap();
    assert_eq!(ds.arrays["features"], npz.arrays["x"]);
    assert_eq!(
        ds.unusable.keys().cloned().collect::<Vec<_>>(),
        ["file", "note"]
    );
    // One non-number in a numeric column is a broken file: the error names the cell.
    let broken = out.replacen(",0.0,", ",n/a,", 1);
    std::fs::write(&path, broken).unwrap();
    let err = Dataset::load(&path, &ArrayKeys::default(), &ImagePreprocess::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("line 2") && err.contains("'n/a' is not a number"),
        "{err}"
    );
}

#[test]
fn npz_arrays_of_another_length_are_set_aside() {
    let test = load("test.npz", &ArrayKeys::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("two_splits.npz");
    let val = test.arrays["x"].slice_rows(0, 100);
    let labels = qgate_core::Array::new(vec![540], ArrayData::I64(test.labels.unwrap())).unwrap();
    qgate_data::npy::write_npz(
        std::fs::File::create(&path).unwrap(),
        &[
            ("x", &test.arrays["x"]),
            ("label", &labels),
            ("val_x", &val),
        ],
    )
    .unwrap();
    let ds = load_path(&path);
    assert_eq!(ds.len(), 540);
    assert!(ds.arrays.contains_key("x") && !ds.arrays.contains_key("val_x"));
    assert!(
        ds.unusable["val_x"].contains("[100, 64]"),
        "{:?}",
        ds.unusable
    );
}

fn load_path(p: &Path) -> Dataset {
    Dataset::load(p, &ArrayKeys::default(), &ImagePreprocess::default()).unwrap()
}

#[test]
fn a_label_typo_is_an_error_not_a_class_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.csv");
    let load_err = |text: &str| {
        std::fs::write(&path, text).unwrap();
        Dataset::load(&path, &ArrayKeys::default(), &ImagePreprocess::default())
            .unwrap_err()
            .to_string()
    };
    // One label typed 1.5 once turned every label into text sorted as class names.
    let err = load_err("p0,label\n0.1,0\n0.2,1.5\n0.3,2\n");
    assert!(
        err.contains("line 3") && err.contains("'1.5'") && err.contains("label"),
        "{err}"
    );
    let err = load_err("p0,label\n0.1,0\n0.2,cat\n");
    assert!(err.contains("line 3") && err.contains("'cat'"), "{err}");
    // Whole floats are class indices; all text is class names.
    std::fs::write(&path, "p0,label\n0.1,0.0\n0.2,2\n").unwrap();
    let ds = Dataset::load(&path, &ArrayKeys::default(), &ImagePreprocess::default()).unwrap();
    assert_eq!(ds.labels, Some(vec![0, 2]));
    std::fs::write(&path, "p0,label\n0.1,dog\n0.2,cat\n").unwrap();
    let ds = Dataset::load(&path, &ArrayKeys::default(), &ImagePreprocess::default()).unwrap();
    assert_eq!(ds.labels, Some(vec![1, 0]));
    assert_eq!(ds.class_names, ["cat", "dog"]);
}
