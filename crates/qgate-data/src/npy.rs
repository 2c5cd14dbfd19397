//! Reading NumPy `.npy` arrays and `.npz` archives of them.
//!
//! Format: <https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html>.
//! Every numeric dtype, both byte orders, Fortran order, fixed-width unicode (`<U`) and byte
//! (`|S`) strings. Object arrays (pickles) are refused: they can run code.

use std::io::Read;

use qgate_core::{Array, ArrayData};

/// Why an array could not be read. The caller adds the file and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NpyError {
    /// Not an npy file.
    #[error("not a .npy array (missing the \\x93NUMPY magic)")]
    Magic,
    /// The header could not be parsed.
    #[error("malformed .npy header: {0}")]
    Header(String),
    /// A dtype qgate does not read.
    #[error(
        "unsupported dtype '{0}' (object arrays need pickle; save numbers or fixed-width strings)"
    )]
    Dtype(String),
    /// Fewer bytes than the header promises.
    #[error("truncated: the header promises {expected} bytes of data, the file holds {actual}")]
    Truncated {
        /// Bytes promised.
        expected: usize,
        /// Bytes present.
        actual: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bool,
    Int,
    Uint,
    Float,
    Unicode,
    Bytes,
}

/// What an `.npy` header declares, and where its data starts.
#[derive(Debug, Clone, PartialEq)]
pub struct NpyHeader {
    /// The dtype as written (`<f4`).
    pub descr: String,
    kind: Kind,
    /// Bytes per value in the file.
    pub size: usize,
    big_endian: bool,
    /// Whether the data is in Fortran (column-major) order.
    pub fortran: bool,
    pub shape: Vec<usize>,
    /// Offset of the first data byte from the start of the `.npy` bytes.
    pub data_offset: usize,
}

impl NpyHeader {
    /// Bytes of data the header promises (`usize::MAX` when that overflows).
    pub fn data_bytes(&self) -> usize {
        self.shape
            .iter()
            .try_fold(self.size, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// Bytes of one sample (one index of the first axis).
    pub fn row_bytes(&self) -> usize {
        self.shape
            .iter()
            .skip(1)
            .try_fold(self.size, |acc, &d| acc.checked_mul(d))
            .unwrap_or(usize::MAX)
    }

    /// Whether this dtype is read as numbers (text and unknown dtypes are not).
    pub fn is_numeric(&self) -> bool {
        !matches!(self.kind, Kind::Unicode | Kind::Bytes)
            && decode(&[], self.kind, self.size, self.big_endian, &self.descr).is_ok()
    }

    /// Decodes whole rows of data (`bytes.len()` a multiple of [`NpyHeader::row_bytes`])
    /// into an array of those rows, in C order.
    pub fn decode_rows(&self, bytes: &[u8]) -> Result<Array, NpyError> {
        let rows = bytes.len() / self.row_bytes().max(1);
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = rows;
        }
        Ok(Array {
            shape,
            data: decode(bytes, self.kind, self.size, self.big_endian, &self.descr)?,
        })
    }

    /// [`NpyHeader::decode_rows`] into `out`, reusing its buffer where it already holds
    /// values of this array's type (float32 and uint8, the image types; other types are
    /// decoded into a new buffer).
    pub fn decode_rows_into(&self, bytes: &[u8], out: &mut Array) -> Result<(), NpyError> {
        let rows = bytes.len() / self.row_bytes().max(1);
        let reused = match (self.kind, self.size, &mut out.data) {
            (Kind::Float, 4, ArrayData::F32(v)) => {
                fill_num(
                    bytes,
                    self.big_endian,
                    f32::from_be_bytes,
                    f32::from_le_bytes,
                    v,
                );
                true
            }
            (Kind::Uint, 1, ArrayData::U8(v)) => {
                v.clear();
                v.extend_from_slice(bytes);
                true
            }
            _ => false,
        };
        if !reused {
            *out = self.decode_rows(bytes)?;
            return Ok(());
        }
        out.shape.clear();
        out.shape.extend_from_slice(&self.shape);
        if let Some(first) = out.shape.first_mut() {
            *first = rows;
        }
        Ok(())
    }
}

/// Replaces `out` with the `N`-byte values of `data`, in the file's byte order.
fn fill_num<T, const N: usize>(
    data: &[u8],
    big: bool,
    from_be: fn([u8; N]) -> T,
    from_le: fn([u8; N]) -> T,
    out: &mut Vec<T>,
) {
    out.clear();
    out.extend(data.chunks_exact(N).map(|c| {
        let mut b = [0u8; N];
        b.copy_from_slice(c);
        if big {
            from_be(b)
        } else {
            from_le(b)
        }
    }));
}

/// Parses the header at the start of `.npy` bytes (the data may be absent).
pub fn parse_header(bytes: &[u8]) -> Result<NpyHeader, NpyError> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err(NpyError::Magic);
    }
    let major = bytes[6];
    let (header_len, start) = match major {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                return Err(NpyError::Header("file ends inside the header".into()));
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => return Err(NpyError::Header(format!("unknown format version {v}"))),
    };
    let header_end = start + header_len;
    if bytes.len() < header_end {
        return Err(NpyError::Header("file ends inside the header".into()));
    }
    let header = std::str::from_utf8(&bytes[start..header_end])
        .map_err(|_| NpyError::Header("header is not text".into()))?;
    let trimmed = header.trim();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return Err(NpyError::Header(
            "the header is not a Python dict literal ({'descr': …})".into(),
        ));
    }
    let descr = dict_value(header, "descr")?;
    let descr = descr.trim().trim_matches(|c| c == '\'' || c == '"');
    let fortran = match dict_value(header, "fortran_order")?.trim() {
        "True" => true,
        "False" => false,
        other => {
            return Err(NpyError::Header(format!(
                "'fortran_order' is {other}; expected True or False"
            )))
        }
    };
    let shape = parse_shape(&dict_value(header, "shape")?)?;
    let (big_endian, kind, size) = parse_descr(descr)?;
    Ok(NpyHeader {
        descr: descr.to_string(),
        kind,
        size,
        big_endian,
        fortran,
        shape,
        data_offset: header_end,
    })
}

/// Parses one `.npy` file's bytes.
pub fn parse_npy(bytes: &[u8]) -> Result<Array, NpyError> {
    let h = parse_header(bytes)?;
    let data = &bytes[h.data_offset..];
    // A hostile shape must not overflow: no product can exceed the bytes that are there.
    let expected = h.data_bytes();
    if data.len() < expected {
        return Err(NpyError::Truncated {
            expected,
            actual: data.len(),
        });
    }
    let data = &data[..expected];
    let values = decode(data, h.kind, h.size, h.big_endian, &h.descr)?;
    let array = Array {
        shape: h.shape,
        data: values,
    };
    Ok(if h.fortran && array.shape.len() > 1 {
        to_c_order(array)
    } else {
        array
    })
}

fn dict_value(header: &str, key: &str) -> Result<String, NpyError> {
    let pat_a = format!("'{key}'");
    let pat_b = format!("\"{key}\"");
    let pos = header
        .find(&pat_a)
        .or_else(|| header.find(&pat_b))
        .ok_or_else(|| NpyError::Header(format!("no '{key}' entry")))?;
    let rest = &header[pos + pat_a.len()..];
    let rest = rest
        .trim_start()
        .strip_prefix(':')
        .ok_or_else(|| NpyError::Header(format!("no ':' after '{key}'")))?
        .trim_start();
    // A value ends at the first top-level comma or closing brace.
    let mut depth = 0;
    let mut in_str = false;
    for (i, ch) in rest.char_indices() {
        match ch {
            '\'' | '"' => in_str = !in_str,
            '(' | '[' if !in_str => depth += 1,
            ')' | ']' if !in_str => depth -= 1,
            ',' | '}' if !in_str && depth == 0 => return Ok(rest[..i].to_string()),
            _ => {}
        }
    }
    Err(NpyError::Header(format!("unterminated value of '{key}'")))
}

fn parse_shape(s: &str) -> Result<Vec<usize>, NpyError> {
    let inner = s
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| NpyError::Header(format!("shape {s} is not a tuple")))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            p.trim_end_matches('L')
                .parse::<usize>()
                .map_err(|_| NpyError::Header(format!("shape entry '{p}' is not a size")))
        })
        .collect()
}

fn parse_descr(descr: &str) -> Result<(bool, Kind, usize), NpyError> {
    let bad = || NpyError::Dtype(descr.to_string());
    let mut chars = descr.chars();
    let first = chars.next().ok_or_else(bad)?;
    let (big, rest) = match first {
        '<' | '=' => (cfg!(target_endian = "big"), &descr[1..]),
        '|' => (false, &descr[1..]),
        '>' => (true, &descr[1..]),
        _ => (cfg!(target_endian = "big"), descr),
    };
    let kind = match rest.chars().next().ok_or_else(bad)? {
        'b' => Kind::Bool,
        'i' => Kind::Int,
        'u' => Kind::Uint,
        'f' => Kind::Float,
        'U' => Kind::Unicode,
        'S' | 'a' => Kind::Bytes,
        _ => return Err(bad()),
    };
    let n: usize = rest[1..].parse().map_err(|_| bad())?;
    let size = match kind {
        Kind::Unicode => n * 4,
        _ => n,
    };
    let ok = match kind {
        Kind::Bool => n == 1,
        Kind::Int | Kind::Uint => matches!(n, 1 | 2 | 4 | 8),
        Kind::Float => matches!(n, 2 | 4 | 8),
        Kind::Unicode | Kind::Bytes => true,
    };
    if !ok {
        return Err(bad());
    }
    Ok((big, kind, size))
}

fn decode(
    data: &[u8],
    kind: Kind,
    size: usize,
    big: bool,
    descr: &str,
) -> Result<ArrayData, NpyError> {
    macro_rules! num {
        ($t:ty) => {{
            let mut v = Vec::new();
            fill_num(data, big, <$t>::from_be_bytes, <$t>::from_le_bytes, &mut v);
            v
        }};
    }
    Ok(match (kind, size) {
        (Kind::Bool, 1) => ArrayData::Bool(data.iter().map(|&b| b != 0).collect()),
        (Kind::Int, 1) => ArrayData::I8(data.iter().map(|&b| b as i8).collect()),
        (Kind::Int, 2) => ArrayData::I16(num!(i16)),
        (Kind::Int, 4) => ArrayData::I32(num!(i32)),
        (Kind::Int, 8) => ArrayData::I64(num!(i64)),
        (Kind::Uint, 1) => ArrayData::U8(data.to_vec()),
        (Kind::Uint, 2) => ArrayData::U16(num!(u16)),
        (Kind::Uint, 4) => ArrayData::U32(num!(u32)),
        (Kind::Uint, 8) => ArrayData::U64(num!(u64)),
        (Kind::Float, 2) => ArrayData::F32(num!(u16).into_iter().map(f16_to_f32).collect()),
        (Kind::Float, 4) => ArrayData::F32(num!(f32)),
        (Kind::Float, 8) => ArrayData::F64(num!(f64)),
        (Kind::Unicode, s) if s > 0 => ArrayData::Str(
            data.chunks_exact(s)
                .map(|c| {
                    c.chunks_exact(4)
                        .map(|b| {
                            if big {
                                u32::from_be_bytes([b[0], b[1], b[2], b[3]])
                            } else {
                                u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                            }
                        })
                        .take_while(|&v| v != 0)
                        .map(|v| char::from_u32(v).unwrap_or(char::REPLACEMENT_CHARACTER))
                        .collect()
                })
                .collect(),
        ),
        (Kind::Bytes, s) if s > 0 => ArrayData::Str(
            data.chunks_exact(s)
                .map(|c| {
                    let end = c.iter().position(|&b| b == 0).unwrap_or(c.len());
                    String::from_utf8_lossy(&c[..end]).into_owned()
                })
                .collect(),
        ),
        (Kind::Unicode | Kind::Bytes, _) => ArrayData::Str(Vec::new()),
        _ => return Err(NpyError::Dtype(descr.to_string())),
    })
}

/// IEEE 754 half → single, exact.
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h >> 15) as u32) << 31;
    let exp = ((h >> 10) & 0x1f) as u32;
    let mant = (h & 0x3ff) as u32;
    let bits = match (exp, mant) {
        (0, 0) => sign,
        (0, m) => {
            // subnormal: normalise
            let mut e = 127 - 15 + 1;
            let mut m = m;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 127 - 15) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

fn to_c_order(a: Array) -> Array {
    // Element at C-index (i0..ik) sits at Fortran offset Σ i_j · Π_{l<j} d_l.
    let shape = a.shape.clone();
    let n = a.len();
    let rank = shape.len();
    let mut f_strides = vec![1usize; rank];
    for j in 1..rank {
        f_strides[j] = f_strides[j - 1] * shape[j - 1];
    }
    let order: Vec<usize> = (0..n)
        .map(|c| {
            let mut rem = c;
            let mut off = 0;
            for j in (0..rank).rev() {
                let i = rem % shape[j];
                rem /= shape[j];
                off += i * f_strides[j];
            }
            off
        })
        .collect();
    // Reuse row selection on a flat view: treat each element as a row.
    let flat = Array {
        shape: vec![n],
        data: a.data,
    };
    let picked = flat.select_rows(&order);
    Array {
        shape,
        data: picked.data,
    }
}

/// The members of an `.npz` archive: name (without `.npy`) and the parsed array.
pub type NpzMembers = Vec<(String, Result<Array, NpyError>)>;

/// The whole uncompressed content of archive member `name`. The header's size is the
/// archive's word: it is checked before allocating, and no more than it says is read (a
/// deflate bomb cannot grow past it).
pub(crate) fn member_bytes<R: Read>(
    member: &mut zip::read::ZipFile<'_, R>,
    name: &str,
) -> Result<Vec<u8>, String> {
    let size = member.size();
    qgate_core::memory::check(
        u128::from(size),
        &format!("archive member '{name}' (uncompressed)"),
    )?;
    let mut bytes = Vec::with_capacity(size as usize);
    member
        .take(size)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read archive member '{name}': {e}"))?;
    Ok(bytes)
}

/// Reads every `.npy` member of an `.npz` archive (stored or deflated), in archive order.
pub fn read_npz<R: Read + std::io::Seek>(reader: R) -> Result<NpzMembers, String> {
    let mut zip =
        zip::ZipArchive::new(reader).map_err(|e| format!("not a valid .npz (zip) archive: {e}"))?;
    let mut out = Vec::new();
    for i in 0..zip.len() {
        let mut file = zip
            .by_index(i)
            .map_err(|e| format!("cannot read archive member {i}: {e}"))?;
        let name = file.name().to_string();
        let bytes = member_bytes(&mut file, &name)?;
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        out.push((key, parse_npy(&bytes)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, fortran: bool, data: &[u8]) -> Vec<u8> {
        let mut out = npy_header(descr, fortran, shape);
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn reads_little_and_big_endian_ints() {
        let a = parse_npy(&npy("<i4", "(2,)", false, &[1, 0, 0, 0, 2, 0, 0, 0])).unwrap();
        assert_eq!(a.data, ArrayData::I32(vec![1, 2]));
        let b = parse_npy(&npy(">i2", "(1,)", false, &[1, 0])).unwrap();
        assert_eq!(b.data, ArrayData::I16(vec![256]));
    }

    #[test]
    fn fortran_order_is_transposed_to_c() {
        // [[1, 2, 3], [4, 5, 6]] stored column-major: 1 4 2 5 3 6
        let a = parse_npy(&npy("|u1", "(2, 3)", true, &[1, 4, 2, 5, 3, 6])).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(a.data, ArrayData::U8(vec![1, 2, 3, 4, 5, 6]));
    }

    #[test]
    fn half_floats_widen_exactly() {
        assert_eq!(f16_to_f32(0x3c00), 1.0);
        assert_eq!(f16_to_f32(0xc000), -2.0);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert!(f16_to_f32(0x7e00).is_nan());
    }

    #[test]
    fn truncated_and_object_arrays_are_refused() {
        let err = parse_npy(&npy("<f4", "(4,)", false, &[0; 8])).unwrap_err();
        assert_eq!(
            err,
            NpyError::Truncated {
                expected: 16,
                actual: 8
            }
        );
        assert!(matches!(
            parse_npy(&npy("|O", "(1,)", false, &[0; 8])),
            Err(NpyError::Dtype(_))
        ));
        assert_eq!(parse_npy(b"hello world"), Err(NpyError::Magic));
    }

    #[test]
    fn unicode_strings() {
        let mut data = Vec::new();
        for s in ["ab", "c"] {
            let mut chars: Vec<u32> = s.chars().map(|c| c as u32).collect();
            chars.resize(2, 0);
            for c in chars {
                data.extend_from_slice(&c.to_le_bytes());
            }
        }
        let a = parse_npy(&npy("<U2", "(2,)", false, &data)).unwrap();
        assert_eq!(a.data, ArrayData::Str(vec!["ab".into(), "c".into()]));
    }
}

/// Encodes an array as a `.npy` file (format 1.0, little-endian, C order). Strings become
/// fixed-width unicode (`<U`).
pub fn encode_npy(a: &Array) -> Vec<u8> {
    macro_rules! le {
        ($descr:expr, $v:expr) => {
            (
                $descr.to_string(),
                $v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        };
    }
    let (descr, data): (String, Vec<u8>) = match &a.data {
        ArrayData::F32(v) => le!("<f4", v),
        ArrayData::F64(v) => le!("<f8", v),
        ArrayData::I8(v) => le!("|i1", v),
        ArrayData::I16(v) => le!("<i2", v),
        ArrayData::I32(v) => le!("<i4", v),
        ArrayData::I64(v) => le!("<i8", v),
        ArrayData::U8(v) => ("|u1".into(), v.clone()),
        ArrayData::U16(v) => le!("<u2", v),
        ArrayData::U32(v) => le!("<u4", v),
        ArrayData::U64(v) => le!("<u8", v),
        ArrayData::Bool(v) => ("|b1".into(), v.iter().map(|&x| x as u8).collect()),
        ArrayData::Str(v) => {
            let width = v
                .iter()
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
                .max(1);
            let mut bytes = Vec::with_capacity(v.len() * width * 4);
            for s in v {
                let mut n = 0;
                for c in s.chars() {
                    bytes.extend_from_slice(&(c as u32).to_le_bytes());
                    n += 1;
                }
                bytes.resize(bytes.len() + (width - n) * 4, 0);
            }
            (format!("<U{width}"), bytes)
        }
    };
    let shape = match a.shape.len() {
        1 => format!("({},)", a.shape[0]),
        _ => format!(
            "({})",
            a.shape
                .iter()
                .map(usize::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut out = npy_header(&descr, false, &shape);
    out.extend_from_slice(&data);
    out
}

/// The magic, version 1.0 and the header dict padded to a multiple of 64 bytes.
fn npy_header(descr: &str, fortran: bool, shape: &str) -> Vec<u8> {
    let order = if fortran { "True" } else { "False" };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': {order}, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = b"\x93NUMPY\x01\x00".to_vec();
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out
}

/// Writes arrays as an uncompressed `.npz` archive that `numpy.load` reads.
pub fn write_npz<W: std::io::Write + std::io::Seek>(
    writer: W,
    arrays: &[(&str, &Array)],
) -> std::io::Result<()> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(writer);
    let opts = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .large_file(true);
    for (name, a) in arrays {
        zip.start_file(format!("{name}.npy"), opts)
            .map_err(std::io::Error::other)?;
        zip.write_all(&encode_npy(a))?;
    }
    zip.finish().map_err(std::io::Error::other)?;
    Ok(())
}

#[cfg(test)]
mod write_tests {
    use super::*;

    #[test]
    fn npz_round_trip() {
        let a = Array::new(
            vec![2, 3],
            ArrayData::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        )
        .unwrap();
        let ids = Array::new(vec![2], ArrayData::Str(vec!["a".into(), "bé".into()])).unwrap();
        let mut buf = std::io::Cursor::new(Vec::new());
        write_npz(&mut buf, &[("logits", &a), ("id", &ids)]).unwrap();
        buf.set_position(0);
        let back = read_npz(buf).unwrap();
        assert_eq!(back[0].0, "logits");
        assert_eq!(back[0].1.as_ref().unwrap(), &a);
        assert_eq!(back[1].1.as_ref().unwrap(), &ids);
    }
}
