//! Arrays left in their file and read a batch of rows at a time, so a data set's memory
//! does not grow with its size.
//!
//! A `.npy` file, or an `.npz` member stored without compression (`numpy.savez`), is read
//! by seeking to the rows asked for: no memory map, no copy of the whole array. A deflated
//! member (`numpy.savez_compressed`) cannot be sought in: it is decompressed once at load to
//! check it (its CRC and length), then read forward a batch at a time, the stream restarted
//! only when rows go backwards. A large image folder is read by decoding the images of the
//! rows asked for, a large CSV table by parsing the records of the rows asked for. Small
//! arrays, Fortran-order arrays and text are read whole.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use qgate_core::{Array, ArrayData, ElemType};

use crate::csv_table::CsvRows;
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
    /// A deflated `.npz` member, decompressed forward as rows are read.
    Deflated(Arc<DeflatedRows>),
    /// One image file per row, decoded and preprocessed as it is read.
    Images(Arc<ImageRows>),
    /// One CSV record per row, its feature cells parsed as it is read.
    Csv(Arc<CsvRows>),
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
        StoredArray::of(Source::Images(Arc::new(rows)))
    }

    /// A CSV table's feature columns, parsed a batch at a time.
    pub(crate) fn csv(rows: CsvRows) -> StoredArray {
        StoredArray::of(Source::Csv(Arc::new(rows)))
    }

    /// Shape in the file (all its rows).
    pub fn shape(&self) -> &[usize] {
        match &self.source {
            Source::Npy { header, .. } => &header.shape,
            Source::Deflated(member) => &member.header.shape,
            Source::Images(images) => &images.shape,
            Source::Csv(table) => &table.shape,
        }
    }

    /// Bytes one row takes in the file, for arrays read as file bytes then decoded (`.npy`
    /// data and `.npz` members; `None` for images and CSV tables, parsed as they are read).
    pub fn row_file_bytes(&self) -> Option<usize> {
        self.source.npy_header().map(NpyHeader::row_bytes)
    }

    /// The element type rows are read as (float16 widens to float32).
    pub fn elem_type(&self) -> ElemType {
        self.elem
    }

    /// The file it is read from (the folder, for images).
    pub fn path(&self) -> &Path {
        match &self.source {
            Source::Npy { path, .. } => path,
            Source::Deflated(member) => &member.path,
            Source::Images(images) => &images.dir,
            Source::Csv(table) => &table.path,
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
            Source::Deflated(member) => return member.read_rows_into(rows, scratch, out),
            Source::Images(images) => return images.read_rows_into(rows, out),
            Source::Csv(table) => return table.read_rows_into(rows, out),
        };
        let mut file = File::open(path).map_err(|e| format!("cannot reopen to read rows: {e}"))?;
        let row_bytes = header.row_bytes();
        read_runs(header, path, rows, scratch, out, |first, buf| {
            file.seek(SeekFrom::Start(offset + (first * row_bytes) as u64))?;
            file.read_exact(buf)
        })
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

/// Reads the bytes of `rows` of an `.npy` array (in that order) into `scratch`, one
/// `read(first row, bytes)` per run of consecutive rows, and decodes them into `out`. The
/// batch is checked against the memory limit first: a file's rows can be any size.
fn read_runs(
    header: &NpyHeader,
    path: &Path,
    rows: &[usize],
    scratch: &mut Vec<u8>,
    out: &mut Array,
    mut read: impl FnMut(usize, &mut [u8]) -> std::io::Result<()>,
) -> Result<(), String> {
    let row_bytes = header.row_bytes();
    qgate_core::memory::check(
        qgate_core::memory::bytes_of(&[rows.len(), row_bytes], 1),
        &format!("a batch of {} rows of {}", rows.len(), path.display()),
    )?;
    scratch.clear();
    scratch.resize(rows.len() * row_bytes, 0);
    let mut at = 0;
    for run in runs(rows) {
        let (first, last) = (rows[run.start], rows[run.end - 1]);
        let len = run.len() * row_bytes;
        read(first, &mut scratch[at..at + len])
            .map_err(|e| format!("cannot read rows {first}..{}: {e}", last + 1))?;
        at += len;
    }
    header
        .decode_rows_into(scratch, out)
        .map_err(|e| e.to_string())
}

/// The runs of consecutive rows in `rows`, as ranges of positions in it: `[4, 5, 6, 9]`
/// gives `0..3` and `3..4`.
pub(crate) fn runs(rows: &[usize]) -> impl Iterator<Item = std::ops::Range<usize>> + '_ {
    let mut i = 0;
    std::iter::from_fn(move || {
        if i >= rows.len() {
            return None;
        }
        let start = i;
        i += 1;
        while i < rows.len() && rows[i] == rows[i - 1] + 1 {
            i += 1;
        }
        Some(start..i)
    })
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
        let head = header_bytes(file, size)?;
        let header = match parse_header(&head) {
            Ok(h) => h,
            Err(e) => return Ok(Err(e)),
        };
        if by_rows(&header) {
            let expected = header.data_bytes();
            let actual = (size - header.data_offset as u64) as usize;
            if actual < expected {
                return Ok(Err(NpyError::Truncated { expected, actual }));
            }
            let offset = start + header.data_offset as u64;
            return Ok(Ok(Member::Stored(StoredArray::of(Source::Npy {
                path: path.to_path_buf(),
                offset,
                header,
            }))));
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

/// The `.npy` header at the start of `r` (at most `size` bytes): magic, version, length and
/// the dictionary, read forward (a decompressing reader cannot seek back).
fn header_bytes<R: Read>(r: &mut R, size: u64) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; 12.min(size as usize)];
    r.read_exact(&mut head)?;
    let header_len = match head.get(6) {
        Some(1) => 10 + u16::from_le_bytes([head[8], head[9]]) as u64,
        Some(2 | 3) if head.len() >= 12 => {
            12 + u32::from_le_bytes([head[8], head[9], head[10], head[11]]) as u64
        }
        _ => 12,
    };
    let rest = header_len.min(size).saturating_sub(head.len() as u64);
    r.take(rest).read_to_end(&mut head)?;
    Ok(head)
}

/// Whether an array with this header can be read a row at a time: numbers in C order (or
/// one-dimensional), with a sample axis.
fn by_rows(header: &NpyHeader) -> bool {
    header.is_numeric() && !(header.fortran && header.shape.len() > 1) && !header.shape.is_empty()
}

impl Source {
    /// The `.npy` header of data read as file bytes then decoded.
    fn npy_header(&self) -> Option<&NpyHeader> {
        match self {
            Source::Npy { header, .. } => Some(header),
            Source::Deflated(member) => Some(&member.header),
            Source::Images(_) | Source::Csv(_) => None,
        }
    }
}

impl StoredArray {
    /// The array of a source, read as its header's element type (float32 without one).
    fn of(source: Source) -> StoredArray {
        let elem = source
            .npy_header()
            .and_then(|h| h.decode_rows(&[]).ok())
            .map_or(ElemType::F32, |a| a.elem_type());
        StoredArray { source, elem }
    }
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
        if member.compression() == zip::CompressionMethod::Deflated && size >= min_bytes {
            let found = deflated_member(path, &mut member)
                .map_err(|e| format!("cannot read archive member '{name}': {e}"))?;
            if let Some(found) = found {
                out.push((key, found));
                continue;
            }
            // Not readable by rows (text, Fortran order): read whole from the start.
            drop(member);
            member = zip
                .by_index(i)
                .map_err(|e| format!("cannot read archive member {i}: {e}"))?;
        }
        let bytes = crate::npy::member_bytes(&mut member, &name)?;
        out.push((key, parse_npy(&bytes).map(Member::Loaded)));
    }
    Ok(out)
}

/// A deflated member left in the archive when it can be read by rows (`None` when it cannot:
/// its header has been read, so the caller reopens it). The whole member is decompressed
/// once here, into nothing, so that a corrupt or short member (the zip reader checks the
/// CRC at its end) is an error at load rather than after part of a run.
fn deflated_member<R: Read>(
    path: &Path,
    member: &mut zip::read::ZipFile<'_, R>,
) -> std::io::Result<Option<Result<Member, NpyError>>> {
    let head = header_bytes(member, member.size())?;
    let header = match parse_header(&head) {
        Ok(h) if by_rows(&h) => h,
        Ok(_) => return Ok(None),
        Err(e) => return Ok(Some(Err(e))),
    };
    // Python's zipfile (and so numpy.load) refuses a member whose data ends before or runs
    // past the size the archive's directory gives it: a damaged archive. Decompressing stops
    // one byte past that size, so a bomb costs no more time than its declared size.
    let left = member.size().saturating_sub(head.len() as u64);
    let actual = std::io::copy(&mut (&mut *member).take(left + 1), &mut std::io::sink())?;
    if actual != left {
        let size = member.size();
        let message = if actual > left {
            format!("it decompresses to more than the {size} bytes the archive's directory says: the archive is damaged")
        } else {
            let whole = head.len() as u64 + actual;
            format!("it decompresses to {whole} bytes, the archive's directory says {size}: the archive is damaged")
        };
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            message,
        ));
    }
    let (actual, expected) = (actual as usize, header.data_bytes());
    if actual < expected {
        return Ok(Some(Err(NpyError::Truncated { expected, actual })));
    }
    let rows = DeflatedRows {
        path: path.to_path_buf(),
        start: member.data_start(),
        compressed: member.compressed_size(),
        header,
        cursor: Mutex::new(None),
    };
    Ok(Some(Ok(Member::Stored(StoredArray::of(Source::Deflated(
        Arc::new(rows),
    ))))))
}

/// A deflated `.npz` member: where its compressed bytes lie in the archive, and the
/// decompressor left where the last rows read ended.
pub(crate) struct DeflatedRows {
    path: PathBuf,
    /// Offset and length of the compressed bytes in the archive.
    start: u64,
    compressed: u64,
    header: NpyHeader,
    /// The decompressor and the row it reads next.
    cursor: Mutex<Option<(Inflater, usize)>>,
}

type Inflater = flate2::read::DeflateDecoder<std::io::BufReader<std::io::Take<File>>>;

impl std::fmt::Debug for DeflatedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeflatedRows")
            .field("path", &self.path)
            .field("start", &self.start)
            .field("compressed", &self.compressed)
            .field("header", &self.header)
            .finish_non_exhaustive()
    }
}

impl PartialEq for DeflatedRows {
    fn eq(&self, other: &Self) -> bool {
        (&self.path, self.start, self.compressed, &self.header)
            == (&other.path, other.start, other.compressed, &other.header)
    }
}

impl DeflatedRows {
    /// A decompressor at the member's first row.
    fn open(&self) -> std::io::Result<(Inflater, usize)> {
        let mut file = File::open(&self.path)?;
        file.seek(SeekFrom::Start(self.start))?;
        let mut inflater =
            flate2::read::DeflateDecoder::new(std::io::BufReader::new(file.take(self.compressed)));
        // The `.npy` header, before the first row.
        skip(&mut inflater, self.header.data_offset as u64)?;
        Ok((inflater, 0))
    }

    /// Reads rows `rows` (in that order) into `out`, decompressing forward from where the
    /// last read ended, or from the start when a row lies behind it.
    fn read_rows_into(
        &self,
        rows: &[usize],
        scratch: &mut Vec<u8>,
        out: &mut Array,
    ) -> Result<(), String> {
        let row_bytes = self.header.row_bytes();
        let mut guard = self
            .cursor
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Taken out: after an error the next read starts afresh.
        let mut cursor = guard.take();
        read_runs(
            &self.header,
            &self.path,
            rows,
            scratch,
            out,
            |first, buf| {
                let (mut inflater, next) = match cursor.take() {
                    Some((inflater, next)) if next <= first => (inflater, next),
                    _ => self.open()?,
                };
                skip(&mut inflater, ((first - next) * row_bytes) as u64)?;
                inflater.read_exact(buf)?;
                cursor = Some((inflater, first + buf.len() / row_bytes.max(1)));
                Ok(())
            },
        )?;
        *guard = cursor;
        Ok(())
    }
}

/// Reads and drops `n` bytes of `r`; an error if it ends first.
fn skip<R: Read>(r: &mut R, n: u64) -> std::io::Result<()> {
    let skipped = std::io::copy(&mut r.take(n), &mut std::io::sink())?;
    if skipped < n {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            format!("the data ends {} bytes early", n - skipped),
        ));
    }
    Ok(())
}

impl ImageRows {
    /// Decodes the images of `rows` (in that order) into `out` as float32, reusing its
    /// buffer when it holds float32 already.
    fn read_rows_into(&self, rows: &[usize], out: &mut Array) -> Result<(), String> {
        let what = format!("a batch of {} images of {}", rows.len(), self.dir.display());
        fill_f32_rows(out, rows.len(), &self.shape[1..], &what, |values| {
            for &r in rows {
                crate::images::decode_onto(
                    &self.files[r],
                    &self.pre,
                    self.channels,
                    self.size,
                    values,
                )
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}

/// Fills `out` with `rows` float32 rows of shape `row_shape` by `fill`, which appends them
/// to the (empty) values: `out`'s buffer is reused when it holds float32 already, and the
/// batch (`what`) is checked against the memory limit before it is reserved.
pub(crate) fn fill_f32_rows(
    out: &mut Array,
    rows: usize,
    row_shape: &[usize],
    what: &str,
    fill: impl FnOnce(&mut Vec<f32>) -> Result<(), String>,
) -> Result<(), String> {
    let mut values = match std::mem::replace(&mut out.data, ArrayData::F32(Vec::new())) {
        ArrayData::F32(mut v) => {
            v.clear();
            v
        }
        _ => Vec::new(),
    };
    let row_len: usize = row_shape.iter().product();
    qgate_core::memory::check(qgate_core::memory::bytes_of(&[rows, row_len], 4), what)?;
    values.reserve(rows * row_len);
    fill(&mut values)?;
    out.shape.clear();
    out.shape.push(rows);
    out.shape.extend_from_slice(row_shape);
    out.data = ArrayData::F32(values);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::runs;

    #[test]
    fn runs_split_at_every_break_in_consecutive_rows() {
        let rows = [4, 5, 6, 9, 3, 4, 4, 0];
        let got: Vec<_> = runs(&rows).collect();
        assert_eq!(got, [0..3, 3..4, 4..6, 6..7, 7..8]);
        assert_eq!(runs(&[]).count(), 0);
    }
}
