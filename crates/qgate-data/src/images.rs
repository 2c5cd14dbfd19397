//! A folder of images, one subfolder per class (the torchvision `ImageFolder` layout),
//! turned into one float32 array by declared preprocessing: decoded whole when small,
//! else a batch at a time from the files.

use std::path::Path;

use qgate_core::{Array, ArrayData};
use serde::{Deserialize, Serialize};

use crate::stored::{ImageRows, StoredArray};
use crate::{DataError, Dataset};

/// Channel order of the produced array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// `[N, C, H, W]` (ONNX exports from PyTorch).
    #[default]
    Nchw,
    /// `[N, H, W, C]` (TensorFlow, TFLite).
    Nhwc,
}

/// Colour channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ColorMode {
    /// Three channels, R G B.
    #[default]
    Rgb,
    /// One luminance channel.
    Gray,
}

/// How each image becomes a tensor: `((pixel · scale) − mean[c]) / std[c]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagePreprocess {
    /// Resize to `[width, height]` (bilinear) before anything else; `None` keeps the size,
    /// which must then be the same for every image.
    pub resize: Option<[u32; 2]>,
    /// Multiplier applied to 8-bit pixel values (default 1/255).
    pub scale: f32,
    /// Per-channel mean subtracted after scaling (one value, or one per channel).
    pub mean: Vec<f32>,
    /// Per-channel standard deviation divided by (one value, or one per channel).
    pub std: Vec<f32>,
    pub layout: Layout,
    pub color: ColorMode,
    /// Name of the produced array (default `image`).
    pub array_name: String,
    /// Keep class folders that hold no image as classes with zero samples. Off by default:
    /// an empty folder such as `00` shifts every later class index by one, and both models
    /// would then be scored against the wrong labels.
    pub allow_empty_classes: bool,
}

impl Default for ImagePreprocess {
    fn default() -> Self {
        ImagePreprocess {
            resize: None,
            scale: 1.0 / 255.0,
            mean: vec![0.0],
            std: vec![1.0],
            layout: Layout::Nchw,
            color: ColorMode::Rgb,
            array_name: "image".into(),
            allow_empty_classes: false,
        }
    }
}

const EXTENSIONS: &[&str] = &["png", "jpg", "jpeg"];

/// Loads a folder of images: decoded whole when they take less than
/// [`crate::STREAM_MIN_BYTES`] as float32, else left in their files and decoded a batch at
/// a time ([`load_image_folder_streaming`]).
pub(crate) fn load_image_folder(dir: &Path, pre: &ImagePreprocess) -> Result<Dataset, DataError> {
    load_image_folder_streaming(dir, pre, crate::STREAM_MIN_BYTES)
}

/// A folder of images, one subfolder per class. When the images take at least `min_bytes`
/// as float32 (`0`: always), they stay in their files: each image's header is read now
/// (every size must match, or `pre` resizes them), and its pixels when a batch asks for it
/// (`Dataset::read_rows`), so memory does not grow with the folder.
pub fn load_image_folder_streaming(
    dir: &Path,
    pre: &ImagePreprocess,
    min_bytes: u64,
) -> Result<Dataset, DataError> {
    let classes = class_folders(dir)?;
    let channels = check_preprocessing(dir, pre)?;
    let mut files = Vec::new();
    let mut labels = Vec::new();
    let mut ids = Vec::new();
    let mut empty: Vec<String> = Vec::new();
    for (class, name) in classes.iter().enumerate() {
        let found = image_files(&dir.join(name))?;
        if found.is_empty() {
            empty.push(name.clone());
        }
        for file in found {
            labels.push(class as i64);
            let stem = file.file_stem().and_then(|s| s.to_str()).unwrap_or("?");
            ids.push(format!("{name}/{stem}"));
            files.push(file);
        }
    }
    let Some(first) = files.first() else {
        return Err(DataError::Empty {
            path: dir.to_path_buf(),
        });
    };
    let size = match pre.resize {
        Some([w, h]) => (w, h),
        None => dimensions(first)?,
    };
    let n = files.len();
    let shape = shape_of(pre.layout, n, size, channels);
    let (arrays, stored) = if qgate_core::memory::bytes_of(&shape, 4) < u128::from(min_bytes) {
        let mut stack = Stack {
            dir,
            pre,
            channels,
            values: Vec::new(),
            size,
        };
        for file in &files {
            stack.push(file)?;
        }
        let array = Array {
            shape,
            data: ArrayData::F32(stack.values),
        };
        (vec![(pre.array_name.clone(), array)], None)
    } else {
        // One image at a time, but that one must fit: its float32 row, and the resize target
        // or the decoded pixels, checked before any is allocated.
        let one = qgate_core::memory::bytes_of(&shape[1..], 4);
        let what = match pre.resize {
            Some([w, h]) => format!("--image-size {w}x{h} for one image"),
            None => format!("one of {}'s images as float32", dir.display()),
        };
        qgate_core::memory::check(2 * one, &what).map_err(|message| DataError::Format {
            path: dir.to_path_buf(),
            message,
        })?;
        for file in &files {
            let found = dimensions(file)?;
            if pre.resize.is_none() && found != size {
                return Err(size_mismatch(file, found, size));
            }
        }
        let rows = ImageRows {
            dir: dir.to_path_buf(),
            shape,
            files,
            pre: pre.clone(),
            channels,
            size,
        };
        (Vec::new(), Some(StoredArray::images(rows)))
    };
    if !empty.is_empty() && !pre.allow_empty_classes {
        return Err(DataError::Format {
            path: dir.to_path_buf(),
            message: format!(
                "class folder(s) with no image: {} — each still takes a class index, so every later class would shift by one; remove them, or pass --allow-empty-classes to keep them as classes with zero samples",
                empty.join(", ")
            ),
        });
    }
    let mut ds = Dataset::from_arrays(&dir.display().to_string(), arrays, Some(labels), Some(ids))?;
    if let Some(stored) = stored {
        ds.stored.insert(pre.array_name.clone(), stored);
    }
    ds.class_names = classes;
    ds.label_key = Some("folder".into());
    Ok(ds)
}

/// `[N, C, H, W]` or `[N, H, W, C]` of `n` images of `size` (width, height).
fn shape_of(layout: Layout, n: usize, (w, h): (u32, u32), c: usize) -> Vec<usize> {
    let (w, h) = (w as usize, h as usize);
    match layout {
        Layout::Nchw => vec![n, c, h, w],
        Layout::Nhwc => vec![n, h, w, c],
    }
}

/// Width and height from an image file's header (its pixels are not decoded).
fn dimensions(file: &Path) -> Result<(u32, u32), DataError> {
    image::image_dimensions(file)
        .map_err(|e| format_error(file, format!("cannot decode image: {e}")))
}

/// The class subfolders of `dir`, sorted (their order is the class index).
fn class_folders(dir: &Path) -> Result<Vec<String>, DataError> {
    let mut classes: Vec<String> = std::fs::read_dir(dir)
        .map_err(|source| DataError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .collect();
    classes.sort();
    if classes.is_empty() {
        return Err(DataError::Format {
            path: dir.to_path_buf(),
            message: "an image folder needs one subfolder per class (e.g. cat/, dog/), found none"
                .into(),
        });
    }
    Ok(classes)
}

/// Checks `mean` and `std` against the colour mode; returns the channel count.
fn check_preprocessing(dir: &Path, pre: &ImagePreprocess) -> Result<usize, DataError> {
    let channels = match pre.color {
        ColorMode::Rgb => 3,
        ColorMode::Gray => 1,
    };
    for (what, v) in [("mean", &pre.mean), ("std", &pre.std)] {
        if v.len() != 1 && v.len() != channels {
            return Err(DataError::Format {
                path: dir.to_path_buf(),
                message: format!(
                    "preprocessing `{what}` has {} values; expected 1 or {channels} (one per channel)",
                    v.len()
                ),
            });
        }
    }
    if pre.std.contains(&0.0) {
        return Err(DataError::Format {
            path: dir.to_path_buf(),
            message: "preprocessing `std` must not be 0".into(),
        });
    }
    Ok(channels)
}

/// The images of one class folder (by extension), sorted.
fn image_files(sub: &Path) -> Result<Vec<std::path::PathBuf>, DataError> {
    let mut files: Vec<_> = std::fs::read_dir(sub)
        .map_err(|source| DataError::Io {
            path: sub.to_path_buf(),
            source,
        })?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// Decoded images, normalised and stacked in the declared layout.
struct Stack<'a> {
    dir: &'a Path,
    pre: &'a ImagePreprocess,
    channels: usize,
    values: Vec<f32>,
    /// Width and height every image must have (once resized).
    size: (u32, u32),
}

impl Stack<'_> {
    /// Decodes, resizes and normalises one image onto the stack. Every size is checked
    /// against the memory limit before it is allocated.
    fn push(&mut self, file: &Path) -> Result<(), DataError> {
        let (pre, channels) = (self.pre, self.channels);
        // The stack as float32 with one more w×h image on it, checked before that image's
        // buffer exists: before decoding when the size is known (`--image-size`: resizing
        // allocates the target), else right after.
        let (w, h) = self.size;
        let fits = |what: String| {
            qgate_core::memory::check(
                (self.values.len() as u128 + u128::from(w) * u128::from(h) * channels as u128) * 4,
                &what,
            )
            .map_err(|message| format_error(file, message))
        };
        if pre.resize.is_some() {
            let images = self.values.len() / (w as usize * h as usize * channels).max(1) + 1;
            fits(format!("--image-size {w}x{h} for {images} image(s)"))?;
        }
        let img = decode(file, pre, self.size)?;
        if pre.resize.is_none() {
            fits(format!("{}'s images as float32", self.dir.display()))?;
        }
        normalise_onto(&img, pre, channels, &mut self.values);
        Ok(())
    }
}

fn format_error(file: &Path, message: String) -> DataError {
    DataError::Format {
        path: file.to_path_buf(),
        message,
    }
}

/// An image whose size is not the folder's.
fn size_mismatch(file: &Path, (w, h): (u32, u32), earlier: (u32, u32)) -> DataError {
    format_error(
        file,
        format!(
            "image is {w}×{h} but earlier images are {}×{}; give --image-size WxH to resize every image to one size",
            earlier.0, earlier.1
        ),
    )
}

/// Decodes `file` and resizes it as `pre` says; it must then be `size`.
fn decode(
    file: &Path,
    pre: &ImagePreprocess,
    size: (u32, u32),
) -> Result<image::DynamicImage, DataError> {
    let img =
        image::open(file).map_err(|e| format_error(file, format!("cannot decode image: {e}")))?;
    let img = match pre.resize {
        Some([w, h]) => img.resize_exact(w, h, image::imageops::FilterType::Triangle),
        None => img,
    };
    let found = (img.width(), img.height());
    if found != size {
        return Err(size_mismatch(file, found, size));
    }
    Ok(img)
}

/// One decoded image's pixels, normalised, appended to `values` in `pre`'s layout.
fn normalise_onto(
    img: &image::DynamicImage,
    pre: &ImagePreprocess,
    channels: usize,
    values: &mut Vec<f32>,
) {
    let pixels: Vec<u8> = match pre.color {
        ColorMode::Rgb => img.to_rgb8().into_raw(),
        ColorMode::Gray => img.to_luma8().into_raw(),
    };
    let hw = (img.width() * img.height()) as usize;
    let norm = |c: usize, p: u8| {
        let m = pre.mean[if pre.mean.len() == 1 { 0 } else { c }];
        let s = pre.std[if pre.std.len() == 1 { 0 } else { c }];
        (p as f32 * pre.scale - m) / s
    };
    match pre.layout {
        Layout::Nhwc => values.extend(
            pixels
                .iter()
                .enumerate()
                .map(|(i, &p)| norm(i % channels, p)),
        ),
        Layout::Nchw => {
            for c in 0..channels {
                values.extend((0..hw).map(|i| norm(c, pixels[i * channels + c])));
            }
        }
    }
}

/// Decodes `file` (which must be `size` once resized) onto `values`: a streamed folder's
/// read of one row.
pub(crate) fn decode_onto(
    file: &Path,
    pre: &ImagePreprocess,
    channels: usize,
    size: (u32, u32),
    values: &mut Vec<f32>,
) -> Result<(), DataError> {
    let img = decode(file, pre, size)?;
    normalise_onto(&img, pre, channels, values);
    Ok(())
}
