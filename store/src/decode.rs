//! The fast path for the state vector columns (`x`, `denoised`): non-null
//! `FixedSizeList<f32|f16, dim>` pages decoded straight into the batch's value buffer; and,
//! through the same page loop, required 64-bit integer columns (`traj_id`, `seed`), which
//! the general reader would decode with a zstd compressor and decompressor made afresh for
//! every column chunk (8% of the target stream's loader time, docs/perf.md).
//!
//! arrow-rs' general reader materialises a repetition and a definition level for every float
//! of a list column and then rebuilds validity from them, which costs more than decompressing
//! and unshuffling the values (docs/perf.md). For a required list of required floats the
//! levels carry no information: every row is `dim` present values, so the repetition levels
//! are `0, 1, 1, ..., 1` per row and the definition levels are all 1. This module checks that
//! they are exactly that pattern run by run (RLE runs in O(1), bit-packed groups bit by bit:
//! about one group per row) instead of decoding them, and copies or unshuffles
//! (BYTE_STREAM_SPLIT) the values into one buffer that becomes the Arrow array without a copy.
//!
//! Pages come from the parquet crate's own page reader (page headers), stored bytes as they
//! are: zstd pages are inflated here with one context and buffer per thread, to exactly the
//! size their header gives. What the fast path does not recognise (another physical or
//! logical type, nullable levels, dictionary pages, codecs other than zstd, encodings other
//! than PLAIN and BYTE_STREAM_SPLIT, any other level pattern) it declines (`Ok(None)`) and the caller uses the general reader, so a legal file
//! from another writer still reads. A page that cannot be what its header claims (it does not
//! decompress, or holds the wrong number of value bytes or values) is an error naming the file.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Arc;

use arrow::array::{ArrayRef, FixedSizeListArray, PrimitiveArray};
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, FieldRef, Float16Type, Float32Type, Int64Type, Schema, UInt64Type,
};
use bytes::Bytes;
use half::f16;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::basic::{Compression, Encoding, LogicalType, Type as PhysicalType};
use parquet::column::page::Page;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::serialized_reader::SerializedPageReader;

use crate::error::{Result, StoreError};
use crate::integrity;

/// A column the fast path can decode: one leaf, either a required list of required floats
/// or a required 64-bit integer.
#[derive(Debug, Clone)]
pub(crate) struct FastColumn {
    /// Index of the column's leaf in the Parquet schema.
    leaf: usize,
    element: Element,
    /// Values per row: the list's length, or 1 for an integer column.
    dim: usize,
    /// The list's item field, as the file's Arrow schema spells it; `None` for integers.
    item: Option<FieldRef>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Element {
    F32,
    F16,
    U64,
    I64,
}

impl FastColumn {
    /// The fast-path plan for root column `root` of a file, or `None` when its schema is
    /// neither a non-null `FixedSizeList<f32|f16>` stored as a required list of required
    /// floats nor a non-null `UInt64`/`Int64` stored as a required INT64.
    pub(crate) fn recognise(
        meta: &ParquetMetaData,
        schema: &Schema,
        root: usize,
    ) -> Option<FastColumn> {
        let field = schema.fields().get(root)?;
        if field.is_nullable() {
            return None;
        }
        let descr = meta.file_metadata().schema_descr();
        let mut leaves = (0..descr.num_columns()).filter(|&l| descr.get_column_root_idx(l) == root);
        let (leaf, None) = (leaves.next()?, leaves.next()) else {
            return None;
        };
        let column = descr.column(leaf);
        let levels = (column.max_def_level(), column.max_rep_level());
        let logical = column.logical_type_ref();
        let (element, dim, item) = match field.data_type() {
            // Required outer field, repeated list, required item: one level of each, and a
            // value present wherever the definition level is 1.
            DataType::FixedSizeList(item, dim) if *dim > 0 && levels == (1, 1) => {
                let element = match (item.data_type(), column.physical_type()) {
                    (DataType::Float32, PhysicalType::FLOAT) if logical.is_none() => Element::F32,
                    (DataType::Float16, PhysicalType::FIXED_LEN_BYTE_ARRAY)
                        if column.type_length() == 2 && logical == Some(&LogicalType::Float16) =>
                    {
                        Element::F16
                    }
                    _ => return None,
                };
                (element, *dim as usize, Some(item.clone()))
            }
            // No levels at all: every page is its values.
            DataType::UInt64 | DataType::Int64
                if levels == (0, 0) && column.physical_type() == PhysicalType::INT64 =>
            {
                let int = match logical {
                    Some(LogicalType::Integer(int)) => Some((int.bit_width, int.is_signed)),
                    _ => None,
                };
                let unsigned = int == Some((64, false));
                let signed = logical.is_none() || int == Some((64, true));
                match field.data_type() {
                    DataType::UInt64 if unsigned => (Element::U64, 1, None),
                    DataType::Int64 if signed => (Element::I64, 1, None),
                    _ => return None,
                }
            }
            _ => return None,
        };
        Some(FastColumn {
            leaf,
            element,
            dim,
            item,
        })
    }

    /// Decodes the column over `row_groups` (in that order) into one array, `Ok(None)` when a
    /// page is of a kind the fast path leaves to the general reader.
    pub(crate) fn decode(
        &self,
        path: &Path,
        bytes: &Bytes,
        meta: &ParquetMetaData,
        row_groups: &[usize],
    ) -> Result<Option<ArrayRef>> {
        fn array<T: StoredValue>(v: Option<PrimitiveArray<T>>) -> Option<ArrayRef> {
            v.map(|v| Arc::new(v) as ArrayRef)
        }
        let values = match self.element {
            Element::F32 => {
                array::<Float32Type>(self.decode_values(path, bytes, meta, row_groups)?)
            }
            Element::F16 => {
                array::<Float16Type>(self.decode_values(path, bytes, meta, row_groups)?)
            }
            Element::U64 => array::<UInt64Type>(self.decode_values(path, bytes, meta, row_groups)?),
            Element::I64 => array::<Int64Type>(self.decode_values(path, bytes, meta, row_groups)?),
        };
        let (Some(values), Some(item)) = (values.clone(), &self.item) else {
            return Ok(values);
        };
        let list = FixedSizeListArray::try_new(item.clone(), self.dim as i32, values, None)
            .map_err(|source| StoreError::Arrow {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Some(Arc::new(list)))
    }

    fn decode_values<T: StoredValue>(
        &self,
        path: &Path,
        bytes: &Bytes,
        meta: &ParquetMetaData,
        row_groups: &[usize],
    ) -> Result<Option<PrimitiveArray<T>>> {
        let damaged = |detail: String| integrity::damaged(path, detail);
        let mut expected = 0usize;
        for &g in row_groups {
            let group = meta
                .row_groups()
                .get(g)
                .ok_or_else(|| damaged(format!("has no row group {g}")))?;
            let rows = usize::try_from(group.num_rows())
                .map_err(|_| damaged(format!("row group {g} has {} rows", group.num_rows())))?;
            expected = rows
                .checked_mul(self.dim)
                .and_then(|v| v.checked_add(expected))
                .ok_or_else(|| damaged(format!("row group {g} has {rows} rows")))?;
        }
        let mut out: Vec<T::Native> = Vec::new();
        // The footer's row counts size the buffer; a count no allocation can hold is damage.
        out.try_reserve_exact(expected)
            .map_err(|_| damaged(format!("claims {expected} values in column {}", self.leaf)))?;
        for &g in row_groups {
            let group = meta.row_group(g);
            let chunk = group.column(self.leaf);
            if chunk.dictionary_page_offset().is_some() {
                return Ok(None);
            }
            let (start, len) = chunk.byte_range();
            if start
                .checked_add(len)
                .is_none_or(|end| end > bytes.len() as u64)
            {
                return Err(damaged(format!(
                    "row group {g}: column chunk at {start}+{len} lies outside the file"
                )));
            }
            let zstd = match chunk.compression() {
                Compression::UNCOMPRESSED => false,
                Compression::ZSTD(_) => true,
                _ => return Ok(None),
            };
            // The page reader parses headers and hands out each page's stored bytes; pages
            // are inflated here with this thread's one zstd context (the parquet crate makes
            // a compressor and a decompressor per column chunk, and a buffer per page).
            let stored = chunk
                .clone()
                .into_builder()
                .set_compression(Compression::UNCOMPRESSED)
                .build()
                .map_err(|e| StoreError::parquet(path, e))?;
            let rows = group.num_rows() as usize;
            let pages = SerializedPageReader::new(Arc::new(bytes.clone()), &stored, rows, None)
                .map_err(|e| StoreError::parquet(path, e))?;
            let want = rows * self.dim;
            let mut at = 0usize;
            let mut header_at = start as usize;
            for page in pages {
                let page = page.map_err(|e| StoreError::parquet(path, e))?;
                let Some((data_at, sizes)) = page_sizes(bytes, header_at, page.buffer()) else {
                    return Ok(None);
                };
                header_at = data_at + page.buffer().len();
                let n = SCRATCH.with_borrow_mut(|scratch| {
                    match inflate(&page, sizes, zstd, scratch, path)? {
                        Some(parts) => self.page_values::<T>(parts, at, path, &mut out),
                        None => Ok(None),
                    }
                })?;
                let Some(n) = n else {
                    return Ok(None);
                };
                at += n;
                if at > want {
                    break;
                }
            }
            if at != want {
                return Err(damaged(format!(
                    "row group {g}: column {} holds {at} values, {rows} rows of {} need {want}",
                    self.leaf, self.dim
                )));
            }
        }
        Ok(Some(PrimitiveArray::<T>::new(out.into(), None)))
    }

    /// Appends one data page's values; `at` is the chunk position of its first value (so the
    /// repetition pattern is checked across pages). `Ok(None)`: not a page for the fast path.
    fn page_values<T: StoredValue>(
        &self,
        parts: PageParts,
        at: usize,
        path: &Path,
        out: &mut Vec<T::Native>,
    ) -> Result<Option<usize>> {
        let PageParts {
            n,
            encoding,
            levels,
            values,
        } = parts;
        let listed = self.item.is_some();
        let (rep, def, values) = match levels {
            Levels::Split { rep, def } => (rep, def, values),
            // v1: each level block is prefixed by its byte length (u32, little-endian); a
            // column without levels has no blocks.
            Levels::Prefixed if listed => prefixed(values)
                .and_then(|(rep, rest)| prefixed(rest).map(|(def, values)| (rep, def, values)))
                .ok_or_else(|| short_page(path))?,
            Levels::Prefixed => (&[][..], &[][..], values),
        };
        let levels_ok = match listed {
            true => self.levels_trivial(rep, def, n, at),
            false => rep.is_empty() && def.is_empty(),
        };
        if !levels_ok {
            return Ok(None);
        }
        if !matches!(encoding, Encoding::PLAIN | Encoding::BYTE_STREAM_SPLIT) {
            return Ok(None);
        }
        if n.checked_mul(T::WIDTH) != Some(values.len()) {
            return Err(integrity::damaged(
                path,
                format!(
                    "a page of column {} holds {} value bytes for {n} values of {} bytes",
                    self.leaf,
                    values.len(),
                    T::WIDTH
                ),
            ));
        }
        match encoding {
            Encoding::PLAIN => T::extend_plain(values, out),
            _ => T::extend_split(values, n, out),
        }
        Ok(Some(n))
    }

    /// Whether `n` values from chunk position `at` have the levels of `dim` present values
    /// per row: repetition 0 at each row start and 1 elsewhere, definition 1 throughout.
    fn levels_trivial(&self, rep: &[u8], def: &[u8], n: usize, at: usize) -> bool {
        let dim = self.dim;
        let rep_ok = for_each_run(rep, n, |pos, run| match run {
            Run::Repeated(value, count) => {
                let r = (at + pos) % dim;
                match value {
                    0 => dim == 1 || (count == 1 && r == 0),
                    1 => r != 0 && r + count <= dim,
                    _ => false,
                }
            }
            Run::Packed(bits, count) => (0..count).all(|j| {
                let want = !(at + pos + j).is_multiple_of(dim);
                (bits[j / 8] >> (j % 8)) & 1 == want as u8
            }),
        });
        let def_ok = for_each_run(def, n, |_, run| match run {
            Run::Repeated(value, _) => value == 1,
            Run::Packed(bits, count) => {
                let full = count / 8;
                bits[..full].iter().all(|&b| b == 0xff)
                    && (count % 8 == 0 || bits[full] | (0xff << (count % 8)) == 0xff)
            }
        });
        rep_ok && def_ok
    }
}

fn short_page(path: &Path) -> StoreError {
    integrity::damaged(path, "a data page is shorter than its level lengths say")
}

thread_local! {
    /// Each decoding thread's zstd context and page buffer, reused page after page.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

#[derive(Default)]
struct Scratch {
    zstd: Option<zstd::bulk::Decompressor<'static>>,
    page: Vec<u8>,
}

impl Scratch {
    /// `src` inflated into the page buffer, or `None` unless it inflates to exactly `size`
    /// bytes (the general reader then reports what is wrong).
    fn inflate(&mut self, src: &[u8], size: usize) -> Option<&[u8]> {
        self.page.clear();
        if size > 0 {
            if self.zstd.is_none() {
                self.zstd = zstd::bulk::Decompressor::new().ok();
            }
            self.page.reserve_exact(size);
            let got = self
                .zstd
                .as_mut()?
                .decompress_to_buffer(src, &mut self.page);
            if got.ok()? != size {
                return None;
            }
        }
        Some(&self.page)
    }
}

/// One data page, uncompressed: its value count, encoding, levels and values.
struct PageParts<'a> {
    n: usize,
    encoding: Encoding,
    levels: Levels<'a>,
    /// For [`Levels::Prefixed`], the whole page body (levels first).
    values: &'a [u8],
}

enum Levels<'a> {
    /// v1 pages: the level blocks lead the body, each behind its u32 length.
    Prefixed,
    /// v2 pages: stored apart from the (possibly compressed) values.
    Split { rep: &'a [u8], def: &'a [u8] },
}

/// The sizes a page header gives before any other field: (type, uncompressed, compressed).
type PageSizes = (i32, i32, i32);

/// Where `data` (a page's stored bytes, a slice of `file`) starts, and the sizes its header
/// (from `header_at` on) declares, or `None` where that cannot be read plainly: an index
/// page in between, another field order, or a compressed size other than the page's.
fn page_sizes(file: &Bytes, header_at: usize, data: &Bytes) -> Option<(usize, PageSizes)> {
    let base = file.as_ptr() as usize;
    let data_at = (data.as_ptr() as usize).checked_sub(base)?;
    let header = file.get(header_at..data_at)?;
    // Thrift compact protocol: the required i32 fields 1, 2, 3 come first, each a header
    // byte (field delta 1, type i32 = 0x15) and a zigzag varint.
    let mut rest = header;
    let mut field = || -> Option<i32> {
        let (&h, r) = rest.split_first()?;
        let (v, r) = uleb128(r).filter(|_| h == 0x15)?;
        rest = r;
        let v = u32::try_from(v).ok()?;
        Some((v >> 1) as i32 ^ -((v & 1) as i32))
    };
    let sizes = (field()?, field()?, field()?);
    (usize::try_from(sizes.2).ok()? == data.len()).then_some((data_at, sizes))
}

/// A data page's parts, its values inflated into `scratch` when the chunk is zstd-compressed;
/// `None` for a page the fast path leaves to the general reader.
fn inflate<'a>(
    page: &'a Page,
    (kind, uncompressed, _): PageSizes,
    zstd: bool,
    scratch: &'a mut Scratch,
    path: &Path,
) -> Result<Option<PageParts<'a>>> {
    let Ok(uncompressed) = usize::try_from(uncompressed) else {
        return Ok(None);
    };
    Ok(match page {
        Page::DataPage {
            buf,
            num_values,
            encoding,
            def_level_encoding,
            rep_level_encoding,
            ..
        } => {
            let rle = *rep_level_encoding == Encoding::RLE && *def_level_encoding == Encoding::RLE;
            let body = match zstd {
                true => scratch.inflate(buf, uncompressed),
                false => Some(&buf[..]),
            };
            let Some(body) = body.filter(|_| kind == 0 && rle) else {
                return Ok(None);
            };
            Some(PageParts {
                n: *num_values as usize,
                encoding: *encoding,
                levels: Levels::Prefixed,
                values: body,
            })
        }
        Page::DataPageV2 {
            buf,
            num_values,
            encoding,
            num_nulls,
            def_levels_byte_len,
            rep_levels_byte_len,
            is_compressed,
            ..
        } => {
            let (r, d) = (*rep_levels_byte_len as usize, *def_levels_byte_len as usize);
            if r.saturating_add(d) > buf.len() {
                return Err(short_page(path));
            }
            let (rep, rest) = buf.split_at(r);
            let (def, stored) = rest.split_at(d);
            let values = match zstd && *is_compressed {
                true => uncompressed
                    .checked_sub(r + d)
                    .and_then(|size| scratch.inflate(stored, size)),
                false => Some(stored),
            };
            let Some(values) = values.filter(|_| kind == 3 && *num_nulls == 0) else {
                return Ok(None);
            };
            Some(PageParts {
                n: *num_values as usize,
                encoding: *encoding,
                levels: Levels::Split { rep, def },
                values,
            })
        }
        Page::DictionaryPage { .. } => None,
    })
}

/// Splits a length-prefixed (u32, little-endian) block off the front of `buf`.
fn prefixed(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?) as usize;
    let rest = &buf[4..];
    (len <= rest.len()).then(|| rest.split_at(len))
}

/// One run of 1-bit levels in the RLE/bit-packed hybrid encoding.
enum Run<'a> {
    /// `count` copies of a value.
    Repeated(u8, usize),
    /// `count` values, bit `j` of the bytes (least significant first) being value `j`.
    Packed(&'a [u8], usize),
}

/// Walks the first `n` levels of a bit-width-1 RLE/bit-packed hybrid block, calling `check`
/// with each run's position; false when `check` refuses a run or the block is short or
/// malformed (the general reader then decides what the page is).
fn for_each_run(mut data: &[u8], n: usize, mut check: impl FnMut(usize, Run) -> bool) -> bool {
    let mut pos = 0usize;
    while pos < n {
        let Some((header, rest)) = uleb128(data) else {
            return false;
        };
        data = rest;
        let left = n - pos;
        if header & 1 == 0 {
            let count = (header >> 1) as usize;
            let Some((&value, rest)) = data.split_first() else {
                return false;
            };
            data = rest;
            if count == 0 || !check(pos, Run::Repeated(value, count.min(left))) {
                return false;
            }
            pos += count.min(left);
        } else {
            // Groups of 8 values, one byte each at bit width 1.
            let groups = (header >> 1) as usize;
            let Some(bits) = data.get(..groups) else {
                return false;
            };
            data = &data[groups..];
            let count = groups.saturating_mul(8).min(left);
            if groups == 0 || !check(pos, Run::Packed(bits, count)) {
                return false;
            }
            pos += count;
        }
    }
    true
}

fn uleb128(data: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in data.iter().enumerate().take(10) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some((value, &data[i + 1..]));
        }
    }
    None
}

/// A value type the fast path decodes: its width and how PLAIN and BYTE_STREAM_SPLIT bytes
/// become values.
trait StoredValue: ArrowPrimitiveType {
    const WIDTH: usize;
    fn extend_plain(src: &[u8], out: &mut Vec<Self::Native>);
    /// `src` is `WIDTH` streams of `n` bytes: byte `k` of every value, then byte `k + 1`.
    fn extend_split(src: &[u8], n: usize, out: &mut Vec<Self::Native>);
}

impl StoredValue for Float32Type {
    const WIDTH: usize = 4;

    fn extend_plain(src: &[u8], out: &mut Vec<f32>) {
        extend_le(src, out, |c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]));
    }

    fn extend_split(src: &[u8], n: usize, out: &mut Vec<f32>) {
        let (b0, rest) = src.split_at(n);
        let (b1, rest) = rest.split_at(n);
        let (b2, b3) = rest.split_at(n);
        let done = unshuffle::f32_blocks(b0, b1, b2, b3, out);
        // Zipped slice iterators: no bounds checks, and the compiler vectorises the interleave
        // of whatever the SIMD blocks left (everything off x86-64).
        out.extend(
            b0[done..]
                .iter()
                .zip(&b1[done..])
                .zip(&b2[done..])
                .zip(&b3[done..])
                .map(|(((&a, &b), &c), &d)| f32::from_le_bytes([a, b, c, d])),
        );
    }
}

impl StoredValue for Float16Type {
    const WIDTH: usize = 2;

    fn extend_plain(src: &[u8], out: &mut Vec<f16>) {
        extend_le(src, out, |c| f16::from_le_bytes([c[0], c[1]]));
    }

    fn extend_split(src: &[u8], n: usize, out: &mut Vec<f16>) {
        let (lo, hi) = src.split_at(n);
        let done = unshuffle::f16_blocks(lo, hi, out);
        out.extend(
            lo[done..]
                .iter()
                .zip(&hi[done..])
                .map(|(&a, &b)| f16::from_le_bytes([a, b])),
        );
    }
}

/// Appends the whole values of PLAIN bytes `src` to `out`. On a little-endian machine the
/// stored bytes are the values, so this is one copy; the per-value loop it replaces took 59%
/// of a read of an uncompressed dataset (docs/perf.md, part 7). `from_le` decodes one value
/// elsewhere. `T` is one of the plain numbers the fast path stores (f32, f16, i64, u64), for
/// which every bit pattern is a value.
fn extend_le<T: Copy>(src: &[u8], out: &mut Vec<T>, from_le: impl Fn(&[u8]) -> T) {
    let width = std::mem::size_of::<T>();
    if cfg!(target_endian = "little") {
        let n = src.len() / width;
        out.reserve(n);
        // SAFETY: `reserve` made room for `n` more values after `len`, `src` holds at least
        // `n * width` bytes and cannot overlap `out`'s buffer, and any bytes are a valid `T`
        // (above), in the machine's byte order.
        unsafe {
            let end = out.as_mut_ptr().add(out.len()).cast::<u8>();
            std::ptr::copy_nonoverlapping(src.as_ptr(), end, n * width);
            out.set_len(out.len() + n);
        }
    } else {
        out.extend(src.chunks_exact(width).map(from_le));
    }
}

/// The byte-stream-split interleave, 16 values at a time with SSE2 (part of every x86-64
/// CPU, so no detection at run time): 6% of a single-threaded read, where the compiler's
/// vectorisation of the zipped loop took 11% (docs/perf.md, part 6). Each function appends
/// whole blocks of 16 to `out` and returns how many values it took; the caller interleaves
/// the rest.
mod unshuffle {
    use half::f16;

    #[cfg(target_arch = "x86_64")]
    pub(super) fn f32_blocks(
        b0: &[u8],
        b1: &[u8],
        b2: &[u8],
        b3: &[u8],
        out: &mut Vec<f32>,
    ) -> usize {
        use std::arch::x86_64::*;
        let n = b0.len().min(b1.len()).min(b2.len()).min(b3.len());
        let blocks = n / 16;
        out.reserve(blocks * 16);
        let start = out.len();
        // SAFETY: every load reads 16 bytes at i * 16 < blocks * 16 <= each stream's length;
        // the stores write blocks * 16 f32 into the capacity just reserved past `start`, and
        // only then is the length moved over them. SSE2 is baseline on x86-64.
        unsafe {
            let load = |s: &[u8], i: usize| _mm_loadu_si128(s.as_ptr().add(i * 16).cast());
            let dst = out.as_mut_ptr().add(start).cast::<__m128i>();
            for i in 0..blocks {
                let (a, b, c, d) = (load(b0, i), load(b1, i), load(b2, i), load(b3, i));
                let (ab_lo, ab_hi) = (_mm_unpacklo_epi8(a, b), _mm_unpackhi_epi8(a, b));
                let (cd_lo, cd_hi) = (_mm_unpacklo_epi8(c, d), _mm_unpackhi_epi8(c, d));
                _mm_storeu_si128(dst.add(i * 4), _mm_unpacklo_epi16(ab_lo, cd_lo));
                _mm_storeu_si128(dst.add(i * 4 + 1), _mm_unpackhi_epi16(ab_lo, cd_lo));
                _mm_storeu_si128(dst.add(i * 4 + 2), _mm_unpacklo_epi16(ab_hi, cd_hi));
                _mm_storeu_si128(dst.add(i * 4 + 3), _mm_unpackhi_epi16(ab_hi, cd_hi));
            }
            out.set_len(start + blocks * 16);
        }
        blocks * 16
    }

    #[cfg(target_arch = "x86_64")]
    pub(super) fn f16_blocks(lo: &[u8], hi: &[u8], out: &mut Vec<f16>) -> usize {
        use std::arch::x86_64::*;
        let blocks = lo.len().min(hi.len()) / 16;
        out.reserve(blocks * 16);
        let start = out.len();
        // SAFETY: as in `f32_blocks`, with two streams and 16 f16 (two stores) per block.
        unsafe {
            let dst = out.as_mut_ptr().add(start).cast::<__m128i>();
            for i in 0..blocks {
                let a = _mm_loadu_si128(lo.as_ptr().add(i * 16).cast());
                let b = _mm_loadu_si128(hi.as_ptr().add(i * 16).cast());
                _mm_storeu_si128(dst.add(i * 2), _mm_unpacklo_epi8(a, b));
                _mm_storeu_si128(dst.add(i * 2 + 1), _mm_unpackhi_epi8(a, b));
            }
            out.set_len(start + blocks * 16);
        }
        blocks * 16
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn f32_blocks(_: &[u8], _: &[u8], _: &[u8], _: &[u8], _: &mut Vec<f32>) -> usize {
        0
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) fn f16_blocks(_: &[u8], _: &[u8], _: &mut Vec<f16>) -> usize {
        0
    }
}

/// Integers stored as INT64 (`UInt64` is the same bits): eight little-endian bytes each.
macro_rules! stored_int64 {
    ($t:ty, $native:ty) => {
        impl StoredValue for $t {
            const WIDTH: usize = 8;

            fn extend_plain(src: &[u8], out: &mut Vec<$native>) {
                extend_le(src, out, |c| {
                    <$native>::from_le_bytes(c.try_into().expect("8 bytes"))
                });
            }

            fn extend_split(src: &[u8], n: usize, out: &mut Vec<$native>) {
                out.extend(
                    (0..n)
                        .map(|i| <$native>::from_le_bytes(std::array::from_fn(|k| src[k * n + i]))),
                );
            }
        }
    };
}
stored_int64!(UInt64Type, u64);
stored_int64!(Int64Type, i64);

/// Column `column` of a whole Parquet file through the fast path, or `Ok(None)` when the
/// fast path declines it: what the tests and the fuzz harness hold against the general
/// reader. Readers of a dataset go through [`crate::Dataset`], which checks the file against
/// the manifest first.
pub fn decode_fast_column(path: &Path, bytes: Bytes, column: &str) -> Result<Option<ArrayRef>> {
    integrity::guard(path, || {
        let meta = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::default())
            .map_err(|e| StoreError::parquet(path, e))?;
        let Ok(root) = meta.schema().index_of(column) else {
            return Ok(None);
        };
        let Some(plan) = FastColumn::recognise(meta.metadata(), meta.schema(), root) else {
            return Ok(None);
        };
        let groups: Vec<usize> = (0..meta.metadata().num_row_groups()).collect();
        plan.decode(path, &bytes, meta.metadata(), &groups)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` values of `width` bytes as byte streams, and the values' bytes in order: every
    /// byte distinct within a value, NaN payloads and signs included.
    fn streams(n: usize, width: usize) -> (Vec<u8>, Vec<u8>) {
        let values: Vec<u8> = (0..n * width)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 5) as u8 ^ (i % width) as u8)
            .collect();
        let mut split = vec![0u8; n * width];
        for (i, value) in values.chunks_exact(width).enumerate() {
            for (k, &byte) in value.iter().enumerate() {
                split[k * n + i] = byte;
            }
        }
        (split, values)
    }

    /// The SIMD blocks and the scalar tail together give back every value's bytes, for
    /// lengths below, at and around the block of 16, appended after what `out` held.
    #[test]
    fn unshuffle_restores_every_value_at_every_length() {
        for n in [0, 1, 15, 16, 17, 31, 32, 33, 784, 1000] {
            let (split, values) = streams(n, 4);
            let mut out = vec![f32::from_bits(0x7fc0_0001)];
            Float32Type::extend_split(&split, n, &mut out);
            let got: Vec<u8> = out[1..].iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!((out.len(), &got), (n + 1, &values), "f32, n = {n}");
            assert_eq!(out[0].to_bits(), 0x7fc0_0001);

            let (split, values) = streams(n, 2);
            let mut out = vec![f16::from_bits(0x7e01)];
            Float16Type::extend_split(&split, n, &mut out);
            let got: Vec<u8> = out[1..].iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!((out.len(), &got), (n + 1, &values), "f16, n = {n}");
        }
    }

    /// PLAIN values appended by one copy are the stored bytes in order, after what `out`
    /// held, from an unaligned start; a trailing partial value is left out.
    #[test]
    fn plain_values_are_appended_as_stored() {
        for n in [0, 1, 7, 784] {
            let (_, values) = streams(n, 4);
            let mut padded = vec![0xaa];
            padded.extend_from_slice(&values);
            padded.push(0xbb);
            let mut out = vec![f32::from_bits(0x7fc0_0001)];
            Float32Type::extend_plain(&padded[1..], &mut out);
            let got: Vec<u8> = out[1..].iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!((out.len(), &got), (n + 1, &values), "f32, n = {n}");
            assert_eq!(out[0].to_bits(), 0x7fc0_0001);

            let (_, values) = streams(n, 8);
            let mut out = vec![u64::MAX];
            UInt64Type::extend_plain(&values, &mut out);
            let want: Vec<u64> = values
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                .collect();
            assert_eq!((out[0], &out[1..]), (u64::MAX, &want[..]), "u64, n = {n}");

            let (_, values) = streams(n, 2);
            let mut out = Vec::new();
            Float16Type::extend_plain(&values[..values.len().saturating_sub(1)], &mut out);
            assert_eq!(out.len(), n.saturating_sub(1), "f16, n = {n}");
            let got: Vec<u8> = out.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(got, values[..got.len()], "f16, n = {n}");
        }
    }
}
