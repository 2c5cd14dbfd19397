//! Synthetic edge cases: corruptions of images in pixel space — darkness, contrast,
//! Gaussian noise, Gaussian blur, occlusion, JPEG and rotation — at severities 1 to 5, after
//! ImageNet-C (Hendrycks & Dietterich, 2019) where it defines them (docs/corruptions.md says
//! where qgate differs). An image is planar `[C][H][W]` with values in [0, 1]; spatial
//! parameters are relative to the image's size, so a severity means the same on 8×8 digits
//! and on 224×224 photographs. Random corruptions draw from a generator seeded by the run's
//! seed, the corruption, the severity and the sample's row, so a sample is corrupted the same
//! way whatever the batch it falls in.

use std::fmt;

use qgate_core::stats::Rng;

/// A corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Corruption {
    /// Darker: every pixel times a factor.
    Dark,
    /// Lower contrast: pulled towards the channel's mean.
    Contrast,
    /// Additive Gaussian noise.
    Noise,
    /// Gaussian blur.
    Blur,
    /// Black square patches at random places.
    Occlusion,
    /// JPEG compression.
    Jpeg,
    /// Rotation about the centre, corners filled with black.
    Rotate,
}

/// Every corruption, in report order.
pub const ALL: [Corruption; 7] = [
    Corruption::Dark,
    Corruption::Contrast,
    Corruption::Noise,
    Corruption::Blur,
    Corruption::Occlusion,
    Corruption::Jpeg,
    Corruption::Rotate,
];

/// Brightness factor of `dark` per severity.
pub const DARK_FACTOR: [f32; 5] = [0.6, 0.4, 0.25, 0.15, 0.08];
/// ImageNet-C's contrast factor per severity.
pub const CONTRAST_FACTOR: [f32; 5] = [0.4, 0.3, 0.2, 0.1, 0.05];
/// ImageNet-C's Gaussian noise standard deviation per severity (pixel values in [0, 1]).
pub const NOISE_SIGMA: [f32; 5] = [0.08, 0.12, 0.18, 0.26, 0.38];
/// ImageNet-C's blur sigma per severity, in pixels of a 224-pixel image (scaled by
/// `min(H, W) / 224`).
pub const BLUR_SIGMA_224: [f32; 5] = [1.0, 2.0, 3.0, 4.0, 6.0];
/// Share of the image occluded per severity (in `severity` square patches).
pub const OCCLUSION_AREA: [f32; 5] = [0.05, 0.1, 0.2, 0.3, 0.4];
/// ImageNet-C's JPEG quality per severity.
pub const JPEG_QUALITY: [u8; 5] = [25, 18, 15, 10, 7];
/// Rotation angle per severity, degrees (counter-clockwise).
pub const ROTATE_DEGREES: [f32; 5] = [6.0, 12.0, 18.0, 24.0, 30.0];

impl Corruption {
    /// The name used on the command line and in slice names.
    pub fn name(self) -> &'static str {
        match self {
            Corruption::Dark => "dark",
            Corruption::Contrast => "contrast",
            Corruption::Noise => "noise",
            Corruption::Blur => "blur",
            Corruption::Occlusion => "occlusion",
            Corruption::Jpeg => "jpeg",
            Corruption::Rotate => "rotate",
        }
    }

    fn code(self) -> u64 {
        ALL.iter().position(|c| *c == self).unwrap_or(0) as u64 + 1
    }
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Corruption {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ALL.iter()
            .copied()
            .find(|c| c.name() == s.trim())
            .ok_or_else(|| {
                let names: Vec<&str> = ALL.iter().map(|c| c.name()).collect();
                format!(
                    "unknown corruption '{s}': expected {} or all",
                    names.join(", ")
                )
            })
    }
}

/// One image, planar `[C][H][W]`, values in [0, 1].
#[derive(Debug, Clone, PartialEq)]
pub struct Image {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub pixels: Vec<f32>,
}

impl Image {
    fn plane(&mut self, c: usize) -> &mut [f32] {
        let n = self.height * self.width;
        &mut self.pixels[c * n..(c + 1) * n]
    }
}

/// A square patch: top-left corner and side, pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Patch {
    pub top: usize,
    pub left: usize,
    pub side: usize,
}

/// The generator of one sample's corruption: the same for a sample whatever its batch.
pub fn sample_rng(seed: u64, corruption: Corruption, severity: u8, row: usize) -> Rng {
    let mix = seed
        ^ corruption.code().wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ (severity as u64).wrapping_mul(0xC2B2_AE3D_27D4_EB4F)
        ^ (row as u64).wrapping_mul(0x1656_67B1_9E37_79F9);
    Rng::new(mix)
}

/// Applies `corruption` at `severity` (1–5) to `img` in place; `rng` serves the random
/// ones. An error names what the image lacks (JPEG needs 1 or 3 channels).
pub fn apply(
    img: &mut Image,
    corruption: Corruption,
    severity: u8,
    rng: &mut Rng,
) -> Result<(), String> {
    let s = (severity.clamp(1, 5) - 1) as usize;
    match corruption {
        Corruption::Dark => img.pixels.iter_mut().for_each(|p| *p *= DARK_FACTOR[s]),
        Corruption::Contrast => contrast(img, CONTRAST_FACTOR[s]),
        Corruption::Noise => noise(img, NOISE_SIGMA[s], rng),
        Corruption::Blur => {
            let sigma = BLUR_SIGMA_224[s] * img.height.min(img.width) as f32 / 224.0;
            blur(img, sigma)
        }
        Corruption::Occlusion => {
            let patches = occlusion_patches(img, severity.clamp(1, 5), rng);
            occlude_at(img, &patches)
        }
        Corruption::Jpeg => jpeg(img, JPEG_QUALITY[s])?,
        Corruption::Rotate => rotate(img, ROTATE_DEGREES[s]),
    }
    Ok(())
}

/// `(x − m)·c + m` with `m` the channel's mean, clipped to [0, 1] (ImageNet-C `contrast`).
fn contrast(img: &mut Image, c: f32) {
    for ch in 0..img.channels {
        let plane = img.plane(ch);
        let mean = plane.iter().map(|&v| v as f64).sum::<f64>() / plane.len().max(1) as f64;
        let mean = mean as f32;
        for v in plane.iter_mut() {
            *v = ((*v - mean) * c + mean).clamp(0.0, 1.0);
        }
    }
}

/// `x + N(0, σ²)`, clipped to [0, 1] (ImageNet-C `gaussian_noise`).
fn noise(img: &mut Image, sigma: f32, rng: &mut Rng) {
    for v in img.pixels.iter_mut() {
        *v = (*v + sigma * standard_normal(rng)).clamp(0.0, 1.0);
    }
}

/// A standard normal draw (Box–Muller).
fn standard_normal(rng: &mut Rng) -> f32 {
    let u1 = rng.unit().max(f64::MIN_POSITIVE);
    let u2 = rng.unit();
    ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
}

/// Gaussian blur with `sigma` pixels, edges extended by their nearest pixel, the kernel cut
/// at `4σ` (scipy's `gaussian_filter(mode="nearest", truncate=4.0)`, as ImageNet-C's
/// skimage call).
pub fn blur(img: &mut Image, sigma: f32) {
    let radius = (4.0 * sigma as f64 + 0.5) as usize;
    if radius == 0 || sigma <= 0.0 {
        return;
    }
    let weights: Vec<f64> = {
        let w: Vec<f64> = (0..=2 * radius)
            .map(|i| {
                let x = i as f64 - radius as f64;
                (-0.5 * x * x / (sigma as f64 * sigma as f64)).exp()
            })
            .collect();
        let total: f64 = w.iter().sum();
        w.into_iter().map(|v| v / total).collect()
    };
    let (h, w) = (img.height, img.width);
    for ch in 0..img.channels {
        let plane = img.plane(ch);
        let mut tmp = vec![0f64; h * w];
        for y in 0..h {
            for x in 0..w {
                tmp[y * w + x] = weights
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| {
                        let xx =
                            (x as isize + k as isize - radius as isize).clamp(0, w as isize - 1);
                        wt * plane[y * w + xx as usize] as f64
                    })
                    .sum();
            }
        }
        for y in 0..h {
            for x in 0..w {
                let v: f64 = weights
                    .iter()
                    .enumerate()
                    .map(|(k, wt)| {
                        let yy =
                            (y as isize + k as isize - radius as isize).clamp(0, h as isize - 1);
                        wt * tmp[yy as usize * w + x]
                    })
                    .sum();
                plane[y * w + x] = v as f32;
            }
        }
    }
}

/// The patches of `occlusion` at `severity`: `severity` squares covering
/// `OCCLUSION_AREA[severity − 1]` of the image between them, each at a uniform random
/// position inside the image.
pub fn occlusion_patches(img: &Image, severity: u8, rng: &mut Rng) -> Vec<Patch> {
    let n = severity.clamp(1, 5) as usize;
    let area = OCCLUSION_AREA[n - 1] as f64 * (img.height * img.width) as f64 / n as f64;
    let side = (area.sqrt().round() as usize).clamp(1, img.height.min(img.width));
    (0..n)
        .map(|_| Patch {
            top: rng.below(img.height - side + 1),
            left: rng.below(img.width - side + 1),
            side,
        })
        .collect()
}

/// Sets every pixel of every patch, in every channel, to black.
pub fn occlude_at(img: &mut Image, patches: &[Patch]) {
    let (h, w) = (img.height, img.width);
    for ch in 0..img.channels {
        let plane = img.plane(ch);
        for p in patches {
            for y in p.top..(p.top + p.side).min(h) {
                for x in p.left..(p.left + p.side).min(w) {
                    plane[y * w + x] = 0.0;
                }
            }
        }
    }
}

/// JPEG round trip at `quality` of the image as 8-bit pixels (grey, or RGB with libjpeg's
/// default 4:2:0 chroma sampling below quality 90, as Pillow — which ImageNet-C used —
/// writes it).
pub fn jpeg(img: &mut Image, quality: u8) -> Result<(), String> {
    let (h, w) = (img.height, img.width);
    let color = match img.channels {
        1 => jpeg_encoder::ColorType::Luma,
        3 => jpeg_encoder::ColorType::Rgb,
        c => return Err(format!("jpeg needs a grey or RGB image, not {c} channels")),
    };
    let (hh, ww) = (
        u16::try_from(h).map_err(|_| format!("jpeg: images up to 65535 pixels high, not {h}"))?,
        u16::try_from(w).map_err(|_| format!("jpeg: images up to 65535 pixels wide, not {w}"))?,
    );
    let c = img.channels;
    let mut bytes = vec![0u8; h * w * c];
    for ch in 0..c {
        for i in 0..h * w {
            bytes[i * c + ch] = (img.pixels[ch * h * w + i] * 255.0)
                .round()
                .clamp(0.0, 255.0) as u8;
        }
    }
    let mut encoded = Vec::new();
    let mut encoder = jpeg_encoder::Encoder::new(&mut encoded, quality);
    // libjpeg's 2×2 block average (`h2v2_downsample`), not the top-left pixel.
    encoder.set_chroma_subsampling_method(jpeg_encoder::ChromaSubsamplingMethod::Average);
    encoder
        .encode(&bytes, ww, hh, color)
        .map_err(|e| format!("jpeg: cannot encode: {e}"))?;
    let decoded = image::load_from_memory_with_format(&encoded, image::ImageFormat::Jpeg)
        .map_err(|e| format!("jpeg: cannot decode: {e}"))?;
    let raw: Vec<u8> = if c == 1 {
        decoded.to_luma8().into_raw()
    } else {
        decoded.to_rgb8().into_raw()
    };
    for ch in 0..c {
        for i in 0..h * w {
            img.pixels[ch * h * w + i] = raw[i * c + ch] as f32 / 255.0;
        }
    }
    Ok(())
}

/// Rotation by `degrees` counter-clockwise about the image's centre `((H−1)/2, (W−1)/2)`,
/// bilinear, with pixels beyond the edges black (scipy's
/// `ndimage.rotate(reshape=False, order=1, mode="grid-constant")`).
pub fn rotate(img: &mut Image, degrees: f32) {
    let (h, w) = (img.height, img.width);
    // Counter-clockwise as displayed (row 0 on top): the source of an output pixel is the
    // output rotated clockwise.
    let (sin, cos) = (-(degrees as f64)).to_radians().sin_cos();
    let (cy, cx) = ((h as f64 - 1.0) / 2.0, (w as f64 - 1.0) / 2.0);
    for ch in 0..img.channels {
        let src = img.plane(ch).to_vec();
        let at = |y: isize, x: isize| -> f64 {
            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                0.0
            } else {
                src[y as usize * w + x as usize] as f64
            }
        };
        let plane = img.plane(ch);
        for y in 0..h {
            for x in 0..w {
                let (dy, dx) = (y as f64 - cy, x as f64 - cx);
                // The source of an output pixel: the inverse rotation.
                let sy = cos * dy - sin * dx + cy;
                let sx = sin * dy + cos * dx + cx;
                let (y0, x0) = (sy.floor(), sx.floor());
                let (fy, fx) = (sy - y0, sx - x0);
                let (y0, x0) = (y0 as isize, x0 as isize);
                let v = at(y0, x0) * (1.0 - fy) * (1.0 - fx)
                    + at(y0, x0 + 1) * (1.0 - fy) * fx
                    + at(y0 + 1, x0) * fy * (1.0 - fx)
                    + at(y0 + 1, x0 + 1) * fy * fx;
                plane[y * w + x] = v as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ramp(c: usize, h: usize, w: usize) -> Image {
        Image {
            channels: c,
            height: h,
            width: w,
            pixels: (0..c * h * w).map(|i| (i % 17) as f32 / 16.0).collect(),
        }
    }

    #[test]
    fn the_same_row_is_corrupted_the_same_way_and_rows_differ() {
        let base = ramp(1, 16, 16);
        let run = |row| {
            let mut img = base.clone();
            apply(
                &mut img,
                Corruption::Noise,
                3,
                &mut sample_rng(7, Corruption::Noise, 3, row),
            )
            .unwrap();
            img
        };
        assert_eq!(run(4), run(4));
        assert_ne!(run(4), run(5));
    }

    #[test]
    fn occlusion_covers_about_its_share_and_jpeg_refuses_two_channels() {
        let mut img = Image {
            channels: 1,
            height: 100,
            width: 100,
            pixels: vec![1.0; 10_000],
        };
        let p = occlusion_patches(&img, 1, &mut Rng::new(1));
        occlude_at(&mut img, &p);
        let black = img.pixels.iter().filter(|v| **v == 0.0).count();
        assert_eq!(black, p[0].side * p[0].side);
        assert!((450..=550).contains(&black), "{black}");
        let mut two = ramp(2, 8, 8);
        assert!(jpeg(&mut two, 50).unwrap_err().contains("2 channels"));
    }

    #[test]
    fn pixels_round_trip_in_both_layouts_with_per_channel_normalisation() {
        let (c, h, w) = (3, 4, 5);
        for layout in [crate::Layout::Nchw, crate::Layout::Nhwc] {
            let space = PixelSpace {
                layout,
                range: 255.0,
                mean: vec![123.7, 116.3, 103.5],
                std: vec![58.4, 57.1, 57.4],
            };
            let shape = match layout {
                crate::Layout::Nchw => vec![2, c, h, w],
                crate::Layout::Nhwc => vec![2, h, w, c],
            };
            // Sample 1, channel 2, pixel (3, 4) is white; everything else black.
            let mut values = vec![0f32; 2 * c * h * w];
            for (i, v) in values.iter_mut().enumerate() {
                let ch = match layout {
                    crate::Layout::Nchw => (i / (h * w)) % c,
                    crate::Layout::Nhwc => i % c,
                };
                *v = -space.mean[ch] / space.std[ch];
            }
            let white = space.at([c, h, w], 1, 2, 3, 4);
            values[white] = (255.0 - space.mean[2]) / space.std[2];
            let array =
                qgate_core::Array::new(shape, qgate_core::ArrayData::F32(values.clone())).unwrap();
            assert_eq!(space.image_shape("x", &array).unwrap(), [c, h, w]);
            let img = space.to_image(&values, [c, h, w], 1);
            let lit: Vec<usize> = (0..img.pixels.len())
                .filter(|&k| img.pixels[k] > 0.5)
                .collect();
            assert_eq!(lit, vec![(2 * h + 3) * w + 4], "{layout:?}");
            let mut back = vec![0f32; values.len()];
            space.from_image(&img, &mut back, [c, h, w], 1);
            let half = c * h * w;
            for k in half..2 * half {
                assert!((back[k] - values[k]).abs() < 1e-4, "{layout:?} {k}");
            }
        }
    }

    #[test]
    fn a_rotation_by_zero_is_the_identity() {
        let mut img = ramp(3, 9, 7);
        let before = img.clone();
        rotate(&mut img, 0.0);
        for (a, b) in img.pixels.iter().zip(&before.pixels) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}

/// How an image array's values map to pixels: `value = (pixel · range − mean_c) / std_c`
/// with pixels in [0, 1] (`range` 1 or 255 for arrays, `255 · scale` for image folders).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PixelSpace {
    pub layout: crate::Layout,
    /// The value of a white pixel before mean and std are applied.
    pub range: f32,
    /// Per channel (one value serves every channel).
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
}

/// What to corrupt and how: every corruption at every severity, on one array.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct CorruptionPlan {
    pub corruptions: Vec<Corruption>,
    pub severities: Vec<u8>,
    /// Seed of the random corruptions.
    pub seed: u64,
    /// How the array's values are pixels.
    pub pixels: PixelSpace,
}

impl serde::Serialize for Corruption {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl PixelSpace {
    /// `(channels, height, width)` of `array` as a batch of images, or why it is not one.
    pub fn image_shape(&self, name: &str, array: &qgate_core::Array) -> Result<[usize; 3], String> {
        let s = &array.shape;
        let layout = match self.layout {
            crate::Layout::Nchw => "nchw",
            crate::Layout::Nhwc => "nhwc",
        };
        if s.len() != 4 {
            return Err(format!(
                "array '{name}' has shape {s:?}; corruptions need a batch of images [N, C, H, W] (--input-layout nchw) or [N, H, W, C] (nhwc)"
            ));
        }
        let (c, h, w) = match self.layout {
            crate::Layout::Nchw => (s[1], s[2], s[3]),
            crate::Layout::Nhwc => (s[3], s[1], s[2]),
        };
        if !(c == 1 || c == 3) || h < 2 || w < 2 {
            return Err(format!(
                "array '{name}' has shape {s:?}, read as {layout}: {c} channel(s) of {h}×{w}; corruptions need grey or RGB images (1 or 3 channels, at least 2×2); set --input-layout"
            ));
        }
        if !matches!(array.data, qgate_core::ArrayData::F32(_)) {
            return Err(format!(
                "array '{name}' holds {}; corruptions need float32 images",
                array.elem_type()
            ));
        }
        for (what, v) in [("--image-mean", &self.mean), ("--image-std", &self.std)] {
            if !(v.len() == 1 || v.len() == c) {
                return Err(format!(
                    "{what} has {} values for {c} channel(s) of array '{name}'; give one, or one per channel",
                    v.len()
                ));
            }
        }
        Ok([c, h, w])
    }

    /// Checks once, before any model runs, that every value of the image array `name` is a
    /// pixel in this space: std finite and non-zero, no pixel more than 0.02 outside [0, 1]
    /// (naming the first sample that has one), and some pixel brighter than 0.1 (a declared
    /// range of 0,255 on values in [0, 1] would otherwise pass, every image nearly black).
    pub fn check_values(
        &self,
        name: &str,
        array: &qgate_core::Array,
        ids: &qgate_core::Ids,
    ) -> Result<(), String> {
        let brightest = self.check_chunk(name, array, ids, 0)?;
        self.check_brightest(name, array.n_rows(), brightest)
    }

    /// [`PixelSpace::check_values`] on some rows of the array, row `i` being sample
    /// `first + i` of `ids`: the brightest pixel among them, or the first error. Finish
    /// with [`PixelSpace::check_brightest`].
    pub fn check_chunk(
        &self,
        name: &str,
        array: &qgate_core::Array,
        ids: &qgate_core::Ids,
        first: usize,
    ) -> Result<f32, String> {
        if let Some(s) = self.std.iter().find(|s| !s.is_finite() || **s == 0.0) {
            return Err(format!(
                "--image-std {s}: a standard deviation divides the pixels; give finite values other than 0"
            ));
        }
        if !self.range.is_finite() || self.range <= 0.0 {
            return Err(format!(
                "pixel range {}: expected a positive number",
                self.range
            ));
        }
        let shape = self.image_shape(name, array)?;
        let qgate_core::ArrayData::F32(values) = &array.data else {
            return Err(format!("array '{name}': corruptions need float32 images"));
        };
        let mut brightest = f32::NEG_INFINITY;
        for i in 0..array.n_rows() {
            let img = self.to_image(values, shape, i);
            for &p in &img.pixels {
                if !(-RANGE_SLACK..=1.0 + RANGE_SLACK).contains(&p) {
                    return Err(format!(
                        "array '{name}': sample '{}' has a value that is pixel {p} in the declared pixel space (range {}, mean {:?}, std {:?}), outside [0, 1]; declare how the array holds pixels with --input-range 0,1|0,255 and --image-mean/--image-std",
                        ids.get(first + i).unwrap_or("?"),
                        self.range,
                        self.mean,
                        self.std
                    ));
                }
                brightest = brightest.max(p);
            }
        }
        Ok(brightest)
    }

    /// The last check of [`PixelSpace::check_values`]: over `rows` rows, some pixel is
    /// brighter than 0.1.
    pub fn check_brightest(&self, name: &str, rows: usize, brightest: f32) -> Result<(), String> {
        if rows > 0 && brightest < 0.1 {
            return Err(format!(
                "array '{name}': its brightest value is pixel {brightest} in the declared pixel space (range {}): every image would be nearly black; is --input-range right (0,1 for values up to 1)?",
                self.range
            ));
        }
        Ok(())
    }

    fn per(v: &[f32], c: usize) -> f32 {
        if v.len() == 1 {
            v[0]
        } else {
            v[c]
        }
    }

    /// Index of value `(channel, y, x)` of sample `i` in a row-major batch.
    fn at(&self, [c, h, w]: [usize; 3], i: usize, ch: usize, y: usize, x: usize) -> usize {
        match self.layout {
            crate::Layout::Nchw => ((i * c + ch) * h + y) * w + x,
            crate::Layout::Nhwc => ((i * h + y) * w + x) * c + ch,
        }
    }

    /// Sample `i` of `values` as pixels in [0, 1] (not clipped: a value outside says the
    /// declared range is wrong).
    pub fn to_image(&self, values: &[f32], shape: [usize; 3], i: usize) -> Image {
        let [c, h, w] = shape;
        let mut pixels = Vec::with_capacity(c * h * w);
        for ch in 0..c {
            let (m, s) = (Self::per(&self.mean, ch), Self::per(&self.std, ch));
            for y in 0..h {
                for x in 0..w {
                    let v = values[self.at(shape, i, ch, y, x)];
                    pixels.push((v * s + m) / self.range);
                }
            }
        }
        Image {
            channels: c,
            height: h,
            width: w,
            pixels,
        }
    }

    /// Writes `img` back as sample `i` of `values`.
    pub fn from_image(&self, img: &Image, values: &mut [f32], shape: [usize; 3], i: usize) {
        let [c, h, w] = shape;
        for ch in 0..c {
            let (m, s) = (Self::per(&self.mean, ch), Self::per(&self.std, ch));
            for y in 0..h {
                for x in 0..w {
                    let p = img.pixels[(ch * h + y) * w + x];
                    values[self.at(shape, i, ch, y, x)] = (p * self.range - m) / s;
                }
            }
        }
    }
}

/// Pixels more than this far outside [0, 1] mean the declared pixel space is wrong.
const RANGE_SLACK: f32 = 0.02;

/// Corrupts every sample of `batch` (a batch of the array `name`), sample `k` being row
/// `rows[k]` of the data file (which seeds it). The array's values are checked once before,
/// with [`PixelSpace::check_values`]; pixels are clipped to [0, 1]. An error names the array
/// and what does not fit (its shape, a corruption it cannot take).
pub fn corrupt_batch(
    plan: &CorruptionPlan,
    name: &str,
    batch: &qgate_core::Array,
    rows: &[usize],
    corruption: Corruption,
    severity: u8,
) -> Result<qgate_core::Array, String> {
    let shape = plan.pixels.image_shape(name, batch)?;
    let qgate_core::ArrayData::F32(values) = &batch.data else {
        return Err(format!("array '{name}': corruptions need float32 images"));
    };
    let mut out = values.clone();
    for (k, &row) in rows.iter().enumerate() {
        // The values were checked once, up front (`PixelSpace::check_values`).
        let mut img = plan.pixels.to_image(values, shape, k);
        img.pixels.iter_mut().for_each(|p| *p = p.clamp(0.0, 1.0));
        let mut rng = sample_rng(plan.seed, corruption, severity, row);
        apply(&mut img, corruption, severity, &mut rng)
            .map_err(|e| format!("array '{name}': {e}"))?;
        plan.pixels.from_image(&img, &mut out, shape, k);
    }
    qgate_core::Array::new(batch.shape.clone(), qgate_core::ArrayData::F32(out))
        .map_err(|e| format!("array '{name}': {e}"))
}
