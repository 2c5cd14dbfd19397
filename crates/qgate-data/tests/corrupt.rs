//! The corruptions against numpy, scipy and Pillow (fixtures/corruptions, written by
//! fixtures/gen/corruptions_reference.py): deterministic ones within one grey level at
//! severities 1 and 5, occlusion at the reference's patch positions, JPEG within 1 dB PSNR
//! of Pillow at the same quality, Gaussian noise's mean and standard deviation within 2 %.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use qgate_core::stats::Rng;
use qgate_core::{Array, ArrayData};
use qgate_data::corrupt::{apply, jpeg, occlude_at, Corruption, Image, Patch, JPEG_QUALITY};
use serde_json::Value;

fn dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/corruptions")
}

fn arrays() -> BTreeMap<String, Array> {
    let file = std::fs::File::open(dir().join("reference.npz")).expect("reference.npz");
    qgate_data::npy::read_npz(std::io::BufReader::new(file))
        .expect("npz")
        .into_iter()
        .map(|(k, a)| (k, a.expect("array")))
        .collect()
}

fn meta() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap()).unwrap()
}

fn image(a: &Array) -> Image {
    let ArrayData::F32(v) = &a.data else {
        panic!("float32 expected")
    };
    Image {
        channels: a.shape[0],
        height: a.shape[1],
        width: a.shape[2],
        pixels: v.clone(),
    }
}

/// Largest difference in grey levels (1/255).
fn grey_levels(a: &Image, b: &Image) -> f32 {
    a.pixels
        .iter()
        .zip(&b.pixels)
        .map(|(x, y)| (x - y).abs() * 255.0)
        .fold(0.0, f32::max)
}

#[test]
fn deterministic_corruptions_equal_numpy_and_scipy_within_one_grey_level() {
    let a = arrays();
    let m = meta();
    let mut checked = 0;
    for name in m["images"].as_array().unwrap() {
        let name = name.as_str().unwrap();
        let input = image(&a[&format!("{name}__input")]);
        for sev in [1u8, 5] {
            for c in [
                Corruption::Dark,
                Corruption::Contrast,
                Corruption::Blur,
                Corruption::Rotate,
            ] {
                let mut got = input.clone();
                apply(&mut got, c, sev, &mut Rng::new(0)).unwrap();
                let want = image(&a[&format!("{name}__{c}__{sev}")]);
                let d = grey_levels(&got, &want);
                assert!(d <= 1.0, "{name} {c}:{sev}: {d} grey levels apart");
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 5 * 2 * 4);
}

#[test]
fn occlusion_at_the_references_patches_equals_numpy() {
    let a = arrays();
    for case in meta()["cases"].as_array().unwrap() {
        let name = case["image"].as_str().unwrap();
        let sev = case["severity"].as_u64().unwrap();
        let patches: Vec<Patch> = case["patches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| Patch {
                top: p["top"].as_u64().unwrap() as usize,
                left: p["left"].as_u64().unwrap() as usize,
                side: p["side"].as_u64().unwrap() as usize,
            })
            .collect();
        assert_eq!(patches.len() as u64, sev, "severity k places k patches");
        let mut got = image(&a[&format!("{name}__input")]);
        occlude_at(&mut got, &patches);
        let want = image(&a[&format!("{name}__occlusion__{sev}")]);
        assert_eq!(grey_levels(&got, &want), 0.0, "{name} occlusion:{sev}");
        // qgate's own patches for this image have the reference's size rule.
        let mut rng = Rng::new(3);
        let own = qgate_data::corrupt::occlusion_patches(&got, sev as u8, &mut rng);
        assert!(
            own.iter().all(|p| p.side == patches[0].side),
            "{name}:{sev}"
        );
    }
}

fn psnr(a: &Image, b: &Image) -> f64 {
    let mse: f64 = a
        .pixels
        .iter()
        .zip(&b.pixels)
        .map(|(x, y)| {
            let d = ((x * 255.0).round() - (y * 255.0).round()) as f64;
            d * d
        })
        .sum::<f64>()
        / a.pixels.len() as f64;
    10.0 * (255.0f64 * 255.0 / mse).log10()
}

#[test]
fn jpeg_is_within_one_db_of_pillow_at_the_same_quality() {
    let a = arrays();
    for case in meta()["cases"].as_array().unwrap() {
        let name = case["image"].as_str().unwrap();
        let sev = case["severity"].as_u64().unwrap() as usize;
        let want = case["jpeg_psnr_db"].as_f64().unwrap();
        let input = image(&a[&format!("{name}__input")]);
        let mut got = input.clone();
        jpeg(&mut got, JPEG_QUALITY[sev - 1]).unwrap();
        let p = psnr(&input, &got);
        eprintln!("{name} jpeg:{sev}: qgate {p:.2} dB, Pillow {want:.2} dB");
        assert!(
            (p - want).abs() <= 1.0,
            "{name} jpeg:{sev}: {p:.2} dB, Pillow {want:.2} dB"
        );
    }
}

#[test]
fn noise_matches_clipped_gaussian_mean_and_deviation_within_two_percent() {
    for case in meta()["noise"].as_array().unwrap() {
        let sev = case["severity"].as_u64().unwrap() as u8;
        // Mid-grey clips both tails alike; dark grey (0.15) clips one, biasing the mean.
        let grey = case["grey"].as_f64().unwrap() as f32;
        let mut img = Image {
            channels: 1,
            height: 400,
            width: 400,
            pixels: vec![grey; 160_000],
        };
        apply(&mut img, Corruption::Noise, sev, &mut Rng::new(42)).unwrap();
        let n = img.pixels.len() as f64;
        let mean = img.pixels.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = img
            .pixels
            .iter()
            .map(|&v| (v as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        let (wm, ws) = (
            case["mean"].as_f64().unwrap(),
            case["std"].as_f64().unwrap(),
        );
        assert!(
            (mean - wm).abs() <= 0.02 * wm,
            "noise:{sev} mean {mean} vs {wm}"
        );
        assert!(
            (var.sqrt() - ws).abs() <= 0.02 * ws,
            "noise:{sev} std {} vs {ws}",
            var.sqrt()
        );
    }
}
