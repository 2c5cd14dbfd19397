//! Tensors as plain data: a shape and a typed, row-major buffer.

use std::fmt;

/// The element type of an [`Array`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ElemType {
    /// IEEE half precision (stored widened to `f32` in memory).
    F16,
    F32,
    F64,
    /// Signed 8-bit integer.
    I8,
    /// Signed 16-bit integer.
    I16,
    /// Signed 32-bit integer.
    I32,
    /// Signed 64-bit integer.
    I64,
    /// Unsigned 8-bit integer.
    U8,
    /// Unsigned 16-bit integer.
    U16,
    /// Unsigned 32-bit integer.
    U32,
    /// Unsigned 64-bit integer.
    U64,
    Bool,
    /// Text (sample ids, class names).
    Str,
}

impl ElemType {
    /// Bytes one value takes in memory here (float16 is stored widened to `f32`; text counts
    /// its `String` header only).
    pub fn size_bytes(self) -> usize {
        match self {
            ElemType::I8 | ElemType::U8 | ElemType::Bool => 1,
            ElemType::I16 | ElemType::U16 => 2,
            ElemType::F16 | ElemType::F32 | ElemType::I32 | ElemType::U32 => 4,
            ElemType::F64 | ElemType::I64 | ElemType::U64 => 8,
            ElemType::Str => std::mem::size_of::<String>(),
        }
    }

    /// Whether values of this type are numbers.
    pub fn is_numeric(self) -> bool {
        !matches!(self, ElemType::Str)
    }

    /// Whether values of this type are integers (or booleans).
    pub fn is_integer(self) -> bool {
        matches!(
            self,
            ElemType::I8
                | ElemType::I16
                | ElemType::I32
                | ElemType::I64
                | ElemType::U8
                | ElemType::U16
                | ElemType::U32
                | ElemType::U64
                | ElemType::Bool
        )
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            ElemType::F16 => "float16",
            ElemType::F32 => "float32",
            ElemType::F64 => "float64",
            ElemType::I8 => "int8",
            ElemType::I16 => "int16",
            ElemType::I32 => "int32",
            ElemType::I64 => "int64",
            ElemType::U8 => "uint8",
            ElemType::U16 => "uint16",
            ElemType::U32 => "uint32",
            ElemType::U64 => "uint64",
            ElemType::Bool => "bool",
            ElemType::Str => "string",
        };
        f.write_str(s)
    }
}

/// A typed row-major buffer.
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    /// 32-bit floats; also holds float16 data widened on load.
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Signed 8-bit integers.
    I8(Vec<i8>),
    /// Signed 16-bit integers.
    I16(Vec<i16>),
    /// Signed 32-bit integers.
    I32(Vec<i32>),
    /// Signed 64-bit integers.
    I64(Vec<i64>),
    /// Unsigned 8-bit integers.
    U8(Vec<u8>),
    /// Unsigned 16-bit integers.
    U16(Vec<u16>),
    /// Unsigned 32-bit integers.
    U32(Vec<u32>),
    /// Unsigned 64-bit integers.
    U64(Vec<u64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

macro_rules! each_numeric {
    ($data:expr, $v:ident => $body:expr, $str:ident => $sbody:expr) => {
        match $data {
            ArrayData::F32($v) => $body,
            ArrayData::F64($v) => $body,
            ArrayData::I8($v) => $body,
            ArrayData::I16($v) => $body,
            ArrayData::I32($v) => $body,
            ArrayData::I64($v) => $body,
            ArrayData::U8($v) => $body,
            ArrayData::U16($v) => $body,
            ArrayData::U32($v) => $body,
            ArrayData::U64($v) => $body,
            ArrayData::Bool($v) => $body,
            ArrayData::Str($str) => $sbody,
        }
    };
}

/// Replaces `out` with rows `indices` (each `row` values long) of `v`, in that order.
fn pick_rows<T: Clone>(v: &[T], indices: &[usize], row: usize, out: &mut Vec<T>) {
    out.clear();
    out.reserve(indices.len() * row);
    for &i in indices {
        out.extend_from_slice(&v[i * row..(i + 1) * row]);
    }
}

/// An n-dimensional array: plain data with no runtime attached.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions, outermost first. The first dimension is the sample axis in data sets.
    pub shape: Vec<usize>,
    /// Row-major values; `data.len() == shape.iter().product()`.
    pub data: ArrayData,
}

/// The shape and buffer length of an array disagree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shape {shape:?} needs {expected} values, the buffer holds {actual}")]
pub struct ShapeError {
    /// The shape asked for.
    pub shape: Vec<usize>,
    /// Values that shape needs.
    pub expected: usize,
    /// Values the buffer holds.
    pub actual: usize,
}

/// Values that cannot be read as integers.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum NotIntegers {
    /// A float that is not a whole finite number.
    #[error("the data holds the non-integer value {value} (element {index})")]
    Fraction {
        /// Position in the buffer.
        index: usize,
        value: f64,
    },
    /// Not numbers at all.
    #[error("the data holds {0}, expected numbers")]
    NotNumeric(ElemType),
}

impl Array {
    /// Builds an array, checking that the buffer fits the shape.
    pub fn new(shape: Vec<usize>, data: ArrayData) -> Result<Array, ShapeError> {
        let expected: usize = shape.iter().product();
        let actual = data.len();
        if expected != actual {
            return Err(ShapeError {
                shape,
                expected,
                actual,
            });
        }
        Ok(Array { shape, data })
    }

    /// A float32 array.
    pub fn from_f32(shape: Vec<usize>, values: Vec<f32>) -> Result<Array, ShapeError> {
        Array::new(shape, ArrayData::F32(values))
    }

    /// The element type.
    pub fn elem_type(&self) -> ElemType {
        self.data.elem_type()
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether the array holds no values.
    pub fn is_empty(&self) -> bool {
        self.data.len() == 0
    }

    /// Size of the first axis (samples), 1 for a scalar.
    pub fn n_rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Values per row (product of all but the first dimension).
    pub fn row_len(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// The values widened to `f64`; `None` for strings.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        self.data.to_f64()
    }

    /// The values converted to `f32`; `None` for strings.
    pub fn to_f32(&self) -> Option<Vec<f32>> {
        Some(match &self.data {
            ArrayData::F32(v) => v.clone(),
            other => other.to_f64()?.into_iter().map(|x| x as f32).collect(),
        })
    }

    /// An empty float32 array (shape `[0]`): a buffer to read rows into.
    pub fn empty_f32() -> Array {
        Array {
            shape: vec![0],
            data: ArrayData::F32(Vec::new()),
        }
    }

    /// [`Array::select_rows`] into `out`, reusing its buffer where it already holds values
    /// of this array's type.
    pub fn select_rows_into(&self, indices: &[usize], out: &mut Array) {
        let row = self.row_len();
        if self.shape.is_empty() {
            *out = self.clone();
            return;
        }
        match (&self.data, &mut out.data) {
            (ArrayData::F32(v), ArrayData::F32(o)) => pick_rows(v, indices, row, o),
            (ArrayData::F64(v), ArrayData::F64(o)) => pick_rows(v, indices, row, o),
            (ArrayData::U8(v), ArrayData::U8(o)) => pick_rows(v, indices, row, o),
            (ArrayData::I64(v), ArrayData::I64(o)) => pick_rows(v, indices, row, o),
            _ => {
                *out = self.select_rows(indices);
                return;
            }
        }
        out.shape.clear();
        out.shape.extend_from_slice(&self.shape);
        out.shape[0] = indices.len();
    }

    /// The rows at `indices` along the first axis, in that order.
    pub fn select_rows(&self, indices: &[usize]) -> Array {
        let row = self.row_len();
        let mut shape = self.shape.clone();
        if shape.is_empty() {
            return self.clone();
        }
        shape[0] = indices.len();
        fn pick<T: Clone>(v: &[T], indices: &[usize], row: usize) -> Vec<T> {
            let mut out = Vec::new();
            pick_rows(v, indices, row, &mut out);
            out
        }
        let data = match &self.data {
            ArrayData::F32(v) => ArrayData::F32(pick(v, indices, row)),
            ArrayData::F64(v) => ArrayData::F64(pick(v, indices, row)),
            ArrayData::I8(v) => ArrayData::I8(pick(v, indices, row)),
            ArrayData::I16(v) => ArrayData::I16(pick(v, indices, row)),
            ArrayData::I32(v) => ArrayData::I32(pick(v, indices, row)),
            ArrayData::I64(v) => ArrayData::I64(pick(v, indices, row)),
            ArrayData::U8(v) => ArrayData::U8(pick(v, indices, row)),
            ArrayData::U16(v) => ArrayData::U16(pick(v, indices, row)),
            ArrayData::U32(v) => ArrayData::U32(pick(v, indices, row)),
            ArrayData::U64(v) => ArrayData::U64(pick(v, indices, row)),
            ArrayData::Bool(v) => ArrayData::Bool(pick(v, indices, row)),
            ArrayData::Str(v) => ArrayData::Str(pick(v, indices, row)),
        };
        Array { shape, data }
    }

    /// Rows `start..end` along the first axis.
    pub fn slice_rows(&self, start: usize, end: usize) -> Array {
        let idx: Vec<usize> = (start..end).collect();
        self.select_rows(&idx)
    }

    /// Concatenates arrays along the first axis. All parts must share type and row shape.
    pub fn concat_rows(parts: &[Array]) -> Option<Array> {
        let first = parts.first()?;
        let mut shape = first.shape.clone();
        if shape.is_empty() {
            return None;
        }
        let mut rows = 0;
        for p in parts {
            if p.shape.len() != shape.len() || p.shape[1..] != shape[1..] {
                return None;
            }
            if p.elem_type() != first.elem_type() {
                return None;
            }
            rows += p.shape[0];
        }
        shape[0] = rows;
        macro_rules! cat {
            ($variant:ident) => {{
                let mut out = Vec::new();
                for p in parts {
                    if let ArrayData::$variant(v) = &p.data {
                        out.extend_from_slice(v);
                    }
                }
                ArrayData::$variant(out)
            }};
        }
        let data = match &first.data {
            ArrayData::F32(_) => cat!(F32),
            ArrayData::F64(_) => cat!(F64),
            ArrayData::I8(_) => cat!(I8),
            ArrayData::I16(_) => cat!(I16),
            ArrayData::I32(_) => cat!(I32),
            ArrayData::I64(_) => cat!(I64),
            ArrayData::U8(_) => cat!(U8),
            ArrayData::U16(_) => cat!(U16),
            ArrayData::U32(_) => cat!(U32),
            ArrayData::U64(_) => cat!(U64),
            ArrayData::Bool(_) => cat!(Bool),
            ArrayData::Str(_) => cat!(Str),
        };
        Some(Array { shape, data })
    }
}

impl ArrayData {
    /// Number of values.
    pub fn len(&self) -> usize {
        each_numeric!(self, v => v.len(), s => s.len())
    }

    /// Whether the buffer is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The element type.
    pub fn elem_type(&self) -> ElemType {
        match self {
            ArrayData::F32(_) => ElemType::F32,
            ArrayData::F64(_) => ElemType::F64,
            ArrayData::I8(_) => ElemType::I8,
            ArrayData::I16(_) => ElemType::I16,
            ArrayData::I32(_) => ElemType::I32,
            ArrayData::I64(_) => ElemType::I64,
            ArrayData::U8(_) => ElemType::U8,
            ArrayData::U16(_) => ElemType::U16,
            ArrayData::U32(_) => ElemType::U32,
            ArrayData::U64(_) => ElemType::U64,
            ArrayData::Bool(_) => ElemType::Bool,
            ArrayData::Str(_) => ElemType::Str,
        }
    }

    /// The values widened to `f64`; `None` for strings.
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        Some(match self {
            ArrayData::F32(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::F64(v) => v.clone(),
            ArrayData::I8(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::I16(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::I32(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::I64(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::U8(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::U16(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::U32(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::U64(v) => v.iter().map(|&x| x as f64).collect(),
            ArrayData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
            ArrayData::Str(_) => return None,
        })
    }

    /// Values as `i64`: integer types as they are, floats only when every value is a whole
    /// finite number (class indices or token ids saved as floats). The one rule every
    /// backend and loader applies when integers are needed.
    pub fn to_i64_whole(&self) -> Result<Vec<i64>, NotIntegers> {
        if let Some(v) = self.to_i64() {
            return Ok(v);
        }
        let f = self
            .to_f64()
            .ok_or(NotIntegers::NotNumeric(self.elem_type()))?;
        f.iter()
            .enumerate()
            .map(|(index, &value)| {
                if value.is_finite() && value.fract() == 0.0 {
                    Ok(value as i64)
                } else {
                    Err(NotIntegers::Fraction { index, value })
                }
            })
            .collect()
    }

    /// Integer values as `i64`, `None` when the type is not an integer type or a value
    /// does not fit.
    pub fn to_i64(&self) -> Option<Vec<i64>> {
        Some(match self {
            ArrayData::I8(v) => v.iter().map(|&x| x as i64).collect(),
            ArrayData::I16(v) => v.iter().map(|&x| x as i64).collect(),
            ArrayData::I32(v) => v.iter().map(|&x| x as i64).collect(),
            ArrayData::I64(v) => v.clone(),
            ArrayData::U8(v) => v.iter().map(|&x| x as i64).collect(),
            ArrayData::U16(v) => v.iter().map(|&x| x as i64).collect(),
            ArrayData::U32(v) => v.iter().map(|&x| x as i64).collect(),
            ArrayData::U64(v) => v
                .iter()
                .map(|&x| i64::try_from(x).ok())
                .collect::<Option<Vec<_>>>()?,
            ArrayData::Bool(v) => v.iter().map(|&x| x as i64).collect(),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_and_concat_rows_round_trip() {
        let a = Array::new(vec![3, 2], ArrayData::I64(vec![0, 1, 2, 3, 4, 5])).unwrap();
        let picked = a.select_rows(&[2, 0]);
        assert_eq!(picked.shape, vec![2, 2]);
        assert_eq!(picked.data, ArrayData::I64(vec![4, 5, 0, 1]));
        let back = Array::concat_rows(&[a.slice_rows(0, 1), a.slice_rows(1, 3)]).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn shape_mismatch_is_an_error() {
        let err = Array::from_f32(vec![2, 2], vec![1.0; 3]).unwrap_err();
        assert_eq!(err.expected, 4);
        assert_eq!(err.actual, 3);
    }
}
