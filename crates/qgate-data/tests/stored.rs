//! Arrays left in their file: rows read by seeking are the rows numpy wrote, through
//! `--limit`/`--seed` selections; small, deflated and Fortran-order arrays are read whole.

#![allow(clippy::unwrap_used)]

use std::io::Write;

use qgate_core::{Array, ArrayData};
use qgate_data::npy::{encode_npy, write_npz};
use qgate_data::{load_npz, load_npz_streaming, ArrayKeys, Dataset, ImagePreprocess};
use zip::CompressionMethod;

#[path = "../../../tests/reference/fixtures.rs"]
mod fixtures_dir;
use fixtures_dir::fixtures;

/// The digits written by numpy (`numpy.savez`: uncompressed), every feature array left in
/// the file, read back through selections.
#[test]
fn stored_rows_are_the_rows_numpy_wrote() {
    let path = fixtures().join("test.npz");
    let whole = load_npz(&path, &ArrayKeys::default()).unwrap();
    let mut lazy = load_npz_streaming(&path, &ArrayKeys::default(), 0).unwrap();
    assert!(lazy.arrays.is_empty(), "{:?}", lazy.arrays.keys());
    assert_eq!(
        lazy.stored.keys().collect::<Vec<_>>(),
        whole.arrays.keys().collect::<Vec<_>>()
    );
    assert_eq!(lazy.ids, whole.ids);
    assert_eq!(lazy.labels, whole.labels);
    for name in whole.arrays.keys() {
        assert_eq!(
            lazy.array_meta(name),
            Some((
                whole.arrays[name].shape.clone(),
                whole.arrays[name].elem_type()
            ))
        );
    }
    // Runs of rows, a single row, rows out of order.
    let idx = [0, 1, 2, 3, 17, 539, 100, 99];
    assert_eq!(
        lazy.read_rows("image", &idx).unwrap(),
        whole.arrays["image"].select_rows(&idx)
    );
    // A seeded subset: positions map to the file's rows.
    let mut sub = whole.clone();
    sub.subset(Some(50), Some(7));
    lazy.subset(Some(50), Some(7));
    assert_eq!(lazy.array_meta("x").unwrap().0, vec![50, 64]);
    let all: Vec<usize> = (0..50).collect();
    assert_eq!(lazy.read_rows("x", &all).unwrap(), sub.arrays["x"]);
    lazy.materialize().unwrap();
    assert!(lazy.stored.is_empty());
    assert_eq!(lazy.arrays["image"], sub.arrays["image"]);
    assert!(lazy.read_rows("no_such", &[0]).is_err());
}

/// Through `Dataset::load`: a feature array of 16 MiB or more stays in the file, labels
/// are read whole whatever their size, and a deflated member stays in the archive too
/// (decompressed forward as rows are read).
#[test]
fn large_uncompressed_arrays_stay_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 4200;
    let width = 1024; // 4 KiB per row: 16.4 MiB in all
    let x: Vec<f32> = (0..rows * width).map(|i| (i % 9973) as f32 * 0.5).collect();
    let x = Array::new(vec![rows, width], ArrayData::F32(x)).unwrap();
    let y = Array::new(
        vec![rows],
        ArrayData::I64((0..rows as i64).map(|i| i % 10).collect()),
    )
    .unwrap();
    let stored = dir.path().join("big.npz");
    write_npz(
        std::fs::File::create(&stored).unwrap(),
        &[("x", &x), ("label", &y)],
    )
    .unwrap();
    let ds = Dataset::load(&stored, &ArrayKeys::default(), &ImagePreprocess::default()).unwrap();
    assert!(ds.stored.contains_key("x") && ds.arrays.is_empty());
    assert_eq!(ds.labels.as_ref().unwrap()[4199], 9);
    assert_eq!(
        ds.read_rows("x", &[4199, 0]).unwrap(),
        x.select_rows(&[4199, 0])
    );

    let deflated = dir.path().join("deflated.npz");
    let mut zip = zip::ZipWriter::new(std::fs::File::create(&deflated).unwrap());
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated)
        .large_file(true);
    for (name, a) in [("x", &x), ("label", &y)] {
        zip.start_file(format!("{name}.npy"), opts).unwrap();
        zip.write_all(&encode_npy(a)).unwrap();
    }
    zip.finish().unwrap();
    let ds = Dataset::load(
        &deflated,
        &ArrayKeys::default(),
        &ImagePreprocess::default(),
    )
    .unwrap();
    assert!(ds.stored.contains_key("x") && ds.arrays.is_empty());
    assert_eq!(ds.labels.as_ref().unwrap()[4199], 9);
    assert_eq!(
        ds.read_rows("x", &[4199, 0, 1]).unwrap(),
        x.select_rows(&[4199, 0, 1])
    );

    // A .npy file of the same array is left in its file too.
    let npy = dir.path().join("x.npy");
    std::fs::write(&npy, encode_npy(&x)).unwrap();
    let ds = Dataset::load(&npy, &ArrayKeys::default(), &ImagePreprocess::default()).unwrap();
    assert_eq!(ds.len(), rows);
    assert_eq!(ds.read_rows("x", &[7]).unwrap(), x.select_rows(&[7]));

    // Truncated: the header promises more rows than the file holds.
    let bytes = encode_npy(&x);
    std::fs::write(&npy, &bytes[..bytes.len() - 4096]).unwrap();
    let err = Dataset::load(&npy, &ArrayKeys::default(), &ImagePreprocess::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("x.npy") && err.contains("truncated"), "{err}");
}

/// A folder of PNGs in three classes; image `k` of class `c` has pixels that depend on
/// both, so a row read from the wrong file shows.
fn image_folder(dir: &std::path::Path, size: (u32, u32)) {
    for (c, class) in ["cat", "dog", "eel"].iter().enumerate() {
        std::fs::create_dir_all(dir.join(class)).unwrap();
        for k in 0..4u32 {
            let img = image::RgbImage::from_fn(size.0, size.1, |x, y| {
                image::Rgb([
                    (x * 13 + k * 40) as u8,
                    (y * 29 + c as u32 * 70) as u8,
                    (x * y + k * 7) as u8,
                ])
            });
            img.save(dir.join(class).join(format!("im{k}.png")))
                .unwrap();
        }
    }
}

/// Images left in their files are decoded a batch at a time into exactly the rows the
/// whole decode gives, in both layouts, through selections, and with resizing.
#[test]
fn streamed_image_folders_read_the_rows_decoded_whole() {
    let dir = tempfile::tempdir().unwrap();
    image_folder(dir.path(), (7, 5));
    for pre in [
        ImagePreprocess::default(),
        ImagePreprocess {
            layout: qgate_data::Layout::Nhwc,
            mean: vec![0.5, 0.4, 0.3],
            std: vec![0.2, 0.25, 0.3],
            ..ImagePreprocess::default()
        },
        ImagePreprocess {
            resize: Some([4, 6]),
            color: qgate_data::ColorMode::Gray,
            ..ImagePreprocess::default()
        },
    ] {
        let whole = qgate_data::load_image_folder_streaming(dir.path(), &pre, u64::MAX).unwrap();
        let mut lazy = qgate_data::load_image_folder_streaming(dir.path(), &pre, 0).unwrap();
        assert!(lazy.arrays.is_empty() && whole.stored.is_empty());
        assert_eq!((&lazy.ids, &lazy.labels), (&whole.ids, &whole.labels));
        assert_eq!(lazy.class_names, whole.class_names);
        let image = &whole.arrays["image"];
        assert_eq!(
            lazy.array_meta("image"),
            Some((image.shape.clone(), image.elem_type()))
        );
        let idx = [11, 0, 1, 5, 5];
        assert_eq!(
            lazy.read_rows("image", &idx).unwrap(),
            image.select_rows(&idx)
        );
        let mut sub = whole.clone();
        sub.subset(Some(5), Some(3));
        lazy.subset(Some(5), Some(3));
        lazy.materialize().unwrap();
        assert_eq!(lazy.arrays["image"], sub.arrays["image"]);
    }
}

/// A streamed folder checks every image's size when it loads (from the headers), and an
/// image whose pixels do not decode is an error naming its file when its batch is read.
#[test]
fn streamed_image_folders_name_the_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    image_folder(dir.path(), (6, 6));
    let odd = dir.path().join("dog").join("odd.png");
    image::RgbImage::new(5, 6).save(&odd).unwrap();
    let pre = ImagePreprocess::default();
    let e = qgate_data::load_image_folder_streaming(dir.path(), &pre, 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("odd.png") && e.contains("earlier images are 6×6"),
        "{e}"
    );
    std::fs::remove_file(&odd).unwrap();
    // A PNG cut after its header: the size reads, the pixels do not.
    let cut = dir.path().join("eel").join("im2.png");
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() - 20]).unwrap();
    let lazy = qgate_data::load_image_folder_streaming(dir.path(), &pre, 0).unwrap();
    assert!(lazy.read_rows("image", &[0, 1]).is_ok());
    let e = lazy.read_rows("image", &[9, 10]).unwrap_err().to_string();
    assert!(
        e.contains("im2.png") && e.contains("cannot decode image"),
        "{e}"
    );
}

/// The digits' CSV table (written by the generator from the same arrays as test.npz), its
/// features left in the file: rows parsed by seeking to their records are numpy's rows,
/// through runs, single rows, rows out of order and a seeded subset.
#[test]
fn streamed_csv_rows_are_the_rows_numpy_wrote() {
    let npz = load_npz(&fixtures().join("test.npz"), &ArrayKeys::default()).unwrap();
    let path = fixtures().join("test.csv");
    let mut lazy = qgate_data::load_csv_streaming(&path, &Default::default(), 0).unwrap();
    assert!(lazy.arrays.is_empty(), "{:?}", lazy.arrays.keys());
    assert_eq!(lazy.ids, npz.ids);
    assert_eq!(lazy.labels, npz.labels);
    assert_eq!(
        lazy.array_meta("features"),
        Some((vec![540, 64], qgate_core::ElemType::F32))
    );
    let idx = [0, 1, 2, 3, 17, 539, 100, 99];
    assert_eq!(
        lazy.read_rows("features", &idx).unwrap(),
        npz.arrays["x"].select_rows(&idx)
    );
    let mut sub = npz.clone();
    sub.subset(Some(50), Some(7));
    lazy.subset(Some(50), Some(7));
    let all: Vec<usize> = (0..50).collect();
    assert_eq!(lazy.read_rows("features", &all).unwrap(), sub.arrays["x"]);
}

/// Record offsets survive what real exports hold: a byte-order mark, CRLF line ends,
/// quoted text cells holding commas and line breaks, padded numbers. The table streamed
/// and the table read whole give numpy's rows; a file changed after loading is an error
/// naming the line, never rows of another sample.
#[test]
fn streamed_csv_offsets_survive_quotes_line_breaks_and_crlf() {
    let text = std::fs::read_to_string(fixtures().join("test.csv")).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap();
    let mut out = format!("\u{feff}{header},note\r\n");
    for (i, l) in lines.enumerate() {
        let note = match i % 3 {
            0 => "\"two\r\nlines, and a comma\"".to_string(),
            1 => format!("\"said \"\"{i}\"\"\""),
            _ => "plain".to_string(),
        };
        let padded = l.replacen(',', ", ", 2);
        out.push_str(&format!("{padded},{note}\r\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("exported.csv");
    std::fs::write(&path, &out).unwrap();
    let npz = load_npz(&fixtures().join("test.npz"), &ArrayKeys::default()).unwrap();
    let whole = Dataset::load(&path, &ArrayKeys::default(), &ImagePreprocess::default()).unwrap();
    assert_eq!(whole.arrays["features"], npz.arrays["x"]);
    assert_eq!(whole.ids, npz.ids);
    assert!(whole.unusable.contains_key("note"), "{:?}", whole.unusable);
    let lazy = qgate_data::load_csv_streaming(&path, &Default::default(), 0).unwrap();
    let idx = [539, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 300, 301];
    assert_eq!(
        lazy.read_rows("features", &idx).unwrap(),
        npz.arrays["x"].select_rows(&idx)
    );
    // The file shrinks under the loaded table: the rows past its end are an error.
    let cut = out.len() / 2;
    std::fs::write(&path, &out[..cut]).unwrap();
    let err = lazy.read_rows("features", &[530]).unwrap_err().to_string();
    assert!(
        err.contains("exported.csv") && err.contains("line 532"),
        "{err}"
    );
}

/// A streamed table's features are checked at load like a table read whole: a broken
/// number names its line and column before any batch is read.
#[test]
fn streamed_csv_checks_every_cell_at_load() {
    let text = std::fs::read_to_string(fixtures().join("test.csv")).unwrap();
    let broken = {
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        lines[400] = lines[400].replacen(",0.0,", ",n/a,", 1);
        lines.join("\n")
    };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.csv");
    std::fs::write(&path, broken).unwrap();
    let err = qgate_data::load_csv_streaming(&path, &Default::default(), 0)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("broken.csv") && err.contains("line 401") && err.contains("'n/a'"),
        "{err}"
    );
}

/// The digits as `numpy.savez_compressed` wrote them, every feature array left deflated in
/// the archive: rows read forward, backwards (the stream restarts), through a seeded subset
/// and whole are numpy's rows.
#[test]
fn deflated_members_read_forward_are_the_rows_numpy_wrote() {
    let whole = load_npz(&fixtures().join("test.npz"), &ArrayKeys::default()).unwrap();
    let path = fixtures().join("test_compressed.npz");
    let mut lazy = load_npz_streaming(&path, &ArrayKeys::default(), 0).unwrap();
    assert!(lazy.arrays.is_empty(), "{:?}", lazy.arrays.keys());
    assert_eq!(
        lazy.stored.keys().collect::<Vec<_>>(),
        whole.arrays.keys().collect::<Vec<_>>()
    );
    assert_eq!((&lazy.ids, &lazy.labels), (&whole.ids, &whole.labels));
    for idx in [
        &[0, 1, 2, 3, 17, 539][..],
        &[100, 99, 98],
        &[5, 6, 7, 8],
        &[539],
        &[0],
    ] {
        for name in ["image", "x"] {
            assert_eq!(
                lazy.read_rows(name, idx).unwrap(),
                whole.arrays[name].select_rows(idx),
                "{name} {idx:?}"
            );
        }
    }
    let mut sub = whole.clone();
    sub.subset(Some(50), Some(7));
    lazy.subset(Some(50), Some(7));
    let all: Vec<usize> = (0..50).collect();
    assert_eq!(lazy.read_rows("x", &all).unwrap(), sub.arrays["x"]);
    lazy.materialize().unwrap();
    assert_eq!(lazy.arrays["image"], sub.arrays["image"]);
}

/// A deflated member whose compressed bytes were damaged, or that holds fewer rows than its
/// header promises, is an error at load naming the archive and the member: never a run
/// that fails half-way or reads garbage.
#[test]
fn a_damaged_deflated_member_is_an_error_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let rows = 300;
    let x: Vec<f32> = (0..rows * 64).map(|i| ((i * 7919) % 1000) as f32).collect();
    let x = Array::new(vec![rows, 64], ArrayData::F32(x)).unwrap();
    let label = Array::new(vec![rows], ArrayData::I64(vec![1; rows])).unwrap();
    let write = |path: &std::path::Path, npy: &[u8]| {
        let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(CompressionMethod::Deflated);
        zip.start_file("label.npy", opts).unwrap();
        zip.write_all(&encode_npy(&label)).unwrap();
        zip.start_file("x.npy", opts).unwrap();
        zip.write_all(npy).unwrap();
        zip.finish().unwrap();
    };
    let load = |path: &std::path::Path| {
        load_npz_streaming(path, &ArrayKeys::default(), 0).map(|ds| ds.read_rows("x", &[299]))
    };
    let good = dir.path().join("good.npz");
    write(&good, &encode_npy(&x));
    assert_eq!(load(&good).unwrap().unwrap(), x.select_rows(&[299]));

    // The error of loading a copy of the good archive named `name`, changed by `damage`.
    let damaged_copy = |name: &str, damage: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = std::fs::read(&good).unwrap();
        damage(&mut bytes);
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        load(&path).unwrap_err().to_string()
    };

    // A byte of the compressed stream flipped: the CRC (or the stream) is wrong.
    let err = damaged_copy("damaged.npz", &|bytes| {
        let mid = bytes.len() * 3 / 4;
        bytes[mid] ^= 0x55;
    });
    assert!(
        err.contains("damaged.npz") && err.contains("'x.npy'"),
        "{err}"
    );

    // The archive's directory says the member is smaller than it decompresses to (a bomb
    // declares little): decompressing stops past the declared size, an error at load.
    let err = damaged_copy("small.npz", &|bytes| {
        let central = bytes.windows(4).rposition(|w| w == b"PK\x01\x02").unwrap();
        bytes[central + 24..central + 28].copy_from_slice(&1000u32.to_le_bytes());
    });
    assert!(
        err.contains("small.npz") && err.contains("more than the 1000 bytes"),
        "{err}"
    );

    // The header promises 300 rows, the member holds 299.
    let npy = encode_npy(&x);
    let short = dir.path().join("short.npz");
    write(&short, &npy[..npy.len() - 256]);
    let ds = load_npz_streaming(&short, &ArrayKeys::default(), 0).unwrap();
    assert!(ds.unusable["x"].contains("truncated"), "{:?}", ds.unusable);
}
