//! Arrays left in their file and read a batch of rows at a time, so a data set's memory
//! does not grow with its size.
//!
//! A `.npy` file, or an `.npz` member stored without compression (`numpy.savez`), is read
//! by seeking to the rows asked for: no memory map, no copy of the whole array. A large
//! image folder is read by decoding the images of the rows asked for. Small arrays,
//! deflated members (`numpy.savez_compressed`: no seeking inside them), Fortran-order
//! arrays and text are read whole, as before.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use qgate_core::{Array, ArrayData, ElemType};

use crate::images::ImagePreprocess;

use crate::npy::{parse_header, parse_npy, NpyError, NpyHeader};

/// Arrays of at least this many bytes stay in their file (when they can be read by rows).
pub const STREAM_MIN_BYTES: u64 = 16 << 20;

/// An array read from its file a batch of rows at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredArray {
    source: Source,
    elem: ElemType,
}

/// Where a stored array's rows come from.
#[derive(Debug, Clone, PartialEq)]
enum Source {
    /// `.npy` data: the rows of `header`'s shape, from byte `offset` of `path`.
    Npy {
        path: PathBuf,
        offset: u64,
        header: NpyHeader,
    },
    /// One image file per row, decoded and preprocessed as it is read.
    Images(Arc<ImageRows>),
}

/// The images of a folder, in sample order, and how each becomes a row.
#[derive(Debug, PartialEq)]
pub(crate) struct ImageRows {
    pub(crate) dir: PathBuf,
    pub(crate) files: Vec<PathBuf>,
    pub(crate) pre: ImagePreprocess,
    pub(crate) channels: usize,
    /// Width and height every image has (or is resized to).
    pub(crate) size: (u32, u32),
    /// `[N, C, H, W]` or `[N, H, W, C]`.
    pub(crate) shape: Vec<usize>,
}

/// One array of a file: read whole, or left in the file.
#[derive(Debug)]
pub(crate) enum Member {
    Loaded(Array),
    Stored(StoredArray),
}

impl StoredArray {
    /// A folder's images, decoded a batch at a time.
    pub(crate) fn images(rows: ImageRows) -> StoredArray {
        StoredArray {
            source: Source::Images(Arc::new(rows)),
            elem: ElemType::F32,
        }
    }

    /// Shape in the file (all its rows).
    pub fn shape(&self) -> &[usize] {
        match &self.source {
            Source::Npy { header, .. } => &header.shape,
            Source::Images(images) => &images.shape,
        }
    }

    /// The element type rows are read as (float16 widens to float32).
    pub fn elem_type(&self) -> ElemType {
        self.elem
    }

    /// The file it is read from (the folder, for images).
    pub fn path(&self) -> &Path {
        match &self.source {
            Source::Npy { path, .. } => path,
            Source::Images(images) => &images.dir,
        }
    }

    /// Reads the rows `rows` of the file (in that order) into one array.
    pub fn read_rows(&self, rows: &[usize]) -> Result<Array, String> {
        let mut out = Array::empty_f32();
        self.read_rows_into(rows, &mut Vec::new(), &mut out)?;
        Ok(out)
    }

    /// [`StoredArray::read_rows`] into `out`, reusing its buffer and `scratch` (the file's
    /// bytes) so that a loop over batches allocates nothing once warm.
    pub fn read_rows_into(
        &self,
        rows: &[usize],
        scratch: &mut Vec<u8>,
        out: &mut Array,
    ) -> Result<(), String> {
        let n_rows = self.shape().first().copied().unwrap_or(0);
        if let Some(&r) = rows.iter().find(|&&r| r >= n_rows) {
            return Err(format!("row {r} is past the array's {n_rows} rows"));
        }
        let (path, offset, header) = match &self.source {
            Source::Npy {
                path,
                offset,
                header,
            } => (path, *offset, header),
            Source::Images(images) => return images.read_rows_into(rows, out),
        };
        let row_bytes = header.row_bytes();
        let mut file = File::open(path).map_err(|e| format!("cannot reopen to read rows: {e}"))?;
        scratch.clear();
        scratch.resize(rows.len() * row_bytes, 0);
        let mut at = 0;
        let mut i = 0;
        while i < rows.len() {
            // One read per run of consecutive rows.
            let mut j = i + 1;
            while j < rows.len() && rows[j] == rows[j - 1] + 1 {
                j += 1;
            }
            let len = (j - i) * row_bytes;
            file.seek(SeekFrom::Start(offset + (rows[i] * row_bytes) as u64))
                .and_then(|_| file.read_exact(&mut scratch[at..at + len]))
                .map_err(|e| format!("cannot read rows {}..{}: {e}", rows[i], rows[j - 1] + 1))?;
            at += len;
            i = j;
        }
        header
            .decode_rows_into(scratch, out)
            .map_err(|e| e.to_string())
    }

    /// Reads every row.
    pub fn read_all(&self) -> Result<Array, String> {
        let n = self.shape().first().copied().unwrap_or(0);
        qgate_core::memory::check(
            qgate_core::memory::bytes_of(self.shape(), self.elem.size_bytes()),
            &format!("array of {} (read whole)", self.path().display()),
        )?;
        self.read_rows(&(0..n).collect::<Vec<_>>())
    }
}

/// Reads one `.npy` array of `size` bytes starting at `start` of `file` (a whole `.npy` file
/// or a stored `.npz` member): left in the file when it is large and can be read by rows,
/// else read whole.
pub(crate) fn read_member<R: Read + Seek>(
    path: &Path,
    file: &mut R,
    start: u64,
    size: u64,
    min_bytes: u64,
) -> Result<Result<Member, NpyError>, std::io::Error> {
    if size >= min_bytes {
        file.seek(SeekFrom::Start(start))?;
        let mut head = vec![0u8; 12.min(size as usize)];
        file.read_exact(&mut head)?;
        let header_len = match head.get(6) {
            Some(1) => 10 + u16::from_le_bytes([head[8], head[9]]) as u64,
            Some(2 | 3) if head.len() >= 12 => {
                12 + u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64
            }
            _ => 12,
        };
        let mut head = vec![0u8; header_len.min(size) as usize];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(&mut head)?;
        let header = match parse_header(&head) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        if header.is_numeric() && !(header.fortran && header.shape.len() > 1) {
            let expected = header.data_bytes();
            let actual = (size - header.data_offset as u64) as usize;
            if actual < expected {
                return Ok(Err(NpyError::Truncated { expected, actual }));
            }
            if !header.shape.is_empty() {
                let elem = header
                    .decode_rows(&[])
                    .map(|a| a.elem_type())
                    .unwrap_or(ElemType::F32);
                return Ok(Ok(Member::Stored(StoredArray {
                    source: Source::Npy {
                        path: path.to_path_buf(),
                        offset: start + header.data_offset as u64,
                        header,
                    },
                    elem,
                })));
            }
        }
    }
    file.seek(SeekFrom::Start(start))?;
    qgate_core::memory::check(
        u128::from(size),
        &format!("{} (read whole)", path.display()),
    )
    .map_err(std::io::Error::other)?;
    let mut bytes = Vec::with_capacity(size as usize);
    file.take(size).read_to_end(&mut bytes)?;
    Ok(parse_npy(&bytes).map(Member::Loaded))
}

/// Each member of an `.npz` file: its name (without `.npy`) and its array, or why it
/// cannot be read.
pub(crate) type Members = Vec<(String, Result<Member, NpyError>)>;

/// The members of an `.npz` file: name (without `.npy`) and the array, read whole or left
/// in the file.
pub(crate) fn read_npz_file(path: &Path, min_bytes: u64) -> Result<Members, String> {
    let file = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| format!("not a valid .npz (zip) archive: {e}"))?;
    let mut out = Vec::new();
    let mut raw = File::open(path).map_err(|e| format!("cannot read: {e}"))?;
    for i in 0..zip.len() {
        let mut member = zip
            .by_index(i)
            .map_err(|e| format!("cannot read archive member {i}: {e}"))?;
        let name = member.name().to_string();
        let key = name.strip_suffix(".npy").unwrap_or(&name).to_string();
        // The header's size is the archive's word: check it before allocating, and read no
        // more than it says (a deflate bomb cannot grow past it).
        let size = member.size();
        let stored = member.compression() == zip::CompressionMethod::Stored
            && member.compressed_size() == size;
        if stored && size >= min_bytes {
            let start = member.data_start();
            drop(member);
            let read = read_member(path, &mut raw, start, size, min_bytes)
                .map_err(|e| format!("cannot read archive member '{name}': {e}"))?;
            out.push((key, read));
            continue;
        }
        let bytes = crate::npy::member_bytes(&mut member, &name)?;
        out.push((key, parse_npy(&bytes).map(Member::Loaded)));
    }
    Ok(out)
}

impl ImageRows {
    /// Decodes the images of `rows` (in that order) into `out` as float32, reusing its
    /// buffer when it holds float32 already.
    fn read_rows_into(&self, rows: &[usize], out: &mut Array) -> Result<(), String> {
        let mut values = match std::mem::replace(&mut out.data, ArrayData::F32(Vec::new())) {
            ArrayData::F32(mut v) => {
                v.clear();
                v
            }
            _ => Vec::new(),
        };
        let row_len: usize = self.shape[1..].iter().product();
        qgate_core::memory::check(
            qgate_core::memory::bytes_of(&[rows.len(), row_len], 4),
            &format!("a batch of {} images of {}", rows.len(), self.dir.display()),
        )?;
        values.reserve(rows.len() * row_len);
        for &r in rows {
            crate::images::decode_onto(
                &self.files[r],
                &self.pre,
                self.channels,
                self.size,
                &mut values,
            )
            .map_err(|e| e.to_string())?;
        }
        out.shape.clear();
        out.shape.push(rows.len());
        out.shape.extend_from_slice(&self.shape[1..]);
        out.data = ArrayData::F32(values);
        Ok(())
    }
}
