//! Small pictures of image inputs, for the flipped samples in the HTML report.

use qgate_core::Array;
use serde::Serialize;

/// An 8-bit image, row-major, grey (1 channel) or RGB (3 channels).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Thumbnail {
    pub id: String,
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// 1 or 3.
    pub channels: usize,
    /// `width × height × channels` bytes, min–max scaled per image.
    #[serde(skip)]
    pub pixels: Vec<u8>,
}

/// Largest side of a thumbnail; larger images are subsampled.
const MAX_SIDE: usize = 64;

/// A thumbnail of sample `index` when `array` looks like images: `[N, C, H, W]` or
/// `[N, H, W, C]` with C ∈ {1, 3}, or `[N, H, W]`, with H and W ≥ 4.
pub fn thumbnail(array: &Array, index: usize, id: &str) -> Option<Thumbnail> {
    let s = &array.shape;
    let (h, w, c, chw) = match s.len() {
        4 if (s[1] == 1 || s[1] == 3) && s[2] >= 4 && s[3] >= 4 => (s[2], s[3], s[1], true),
        4 if (s[3] == 1 || s[3] == 3) && s[1] >= 4 && s[2] >= 4 => (s[1], s[2], s[3], false),
        3 if s[1] >= 4 && s[2] >= 4 => (s[1], s[2], 1, true),
        _ => return None,
    };
    let row = array.select_rows(&[index]).to_f64()?;
    let lo = row
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::INFINITY, f64::min);
    let hi = row
        .iter()
        .copied()
        .filter(|v| v.is_finite())
        .fold(f64::NEG_INFINITY, f64::max);
    picture(&row, [h, w, c], chw, [lo, hi], id)
}

/// A thumbnail of a pixel-space image (planar `[C][H][W]`, values in [0, 1]) shown as it
/// is: a darkened image stays dark.
pub fn pixel_thumbnail(img: &qgate_data::corrupt::Image, id: &str) -> Option<Thumbnail> {
    let row: Vec<f64> = img.pixels.iter().map(|&p| p as f64).collect();
    picture(
        &row,
        [img.height, img.width, img.channels],
        true,
        [0.0, 1.0],
        id,
    )
}

/// `row` (one image, planar when `chw`) scaled from `[lo, hi]` to 8 bits and subsampled.
fn picture(
    row: &[f64],
    [h, w, c]: [usize; 3],
    chw: bool,
    [lo, hi]: [f64; 2],
    id: &str,
) -> Option<Thumbnail> {
    if h == 0 || w == 0 {
        return None;
    }
    let span = if hi > lo { hi - lo } else { 1.0 };
    let step = h.max(w).div_ceil(MAX_SIDE);
    let (th, tw) = (h.div_ceil(step), w.div_ceil(step));
    let mut pixels = Vec::with_capacity(th * tw * c);
    for y in (0..h).step_by(step) {
        for x in (0..w).step_by(step) {
            for ch in 0..c {
                let i = if chw {
                    ch * h * w + y * w + x
                } else {
                    (y * w + x) * c + ch
                };
                let v = row[i];
                let p = if v.is_finite() {
                    ((v - lo) / span * 255.0).round()
                } else {
                    0.0
                };
                pixels.push(p.clamp(0.0, 255.0) as u8);
            }
        }
    }
    Some(Thumbnail {
        id: id.to_string(),
        width: tw,
        height: th,
        channels: c,
        pixels,
    })
}
