//! A loaded SIF image: opening (from a path, an open `File` or bytes), validation of the
//! header and descriptor table, and the read-side queries (objects, groups, object data,
//! digest inputs).
//!
//! Loading reads only the header and the descriptor table; object data is read on demand
//! with positioned reads, bounded by the object's size.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::descriptor::{DESCRIPTOR_DIGEST_INPUT_LEN, DESCRIPTOR_LEN, Descriptor, Slot};
use super::error::{ErrorKind, SifError};
use super::header::{HEADER_DIGEST_INPUT_LEN, HEADER_LEN, Header, MAGIC, VERSION};
use super::types::DataType;

/// The most descriptor slots an image may have (the Go tools use 48). Caps the memory a
/// corrupt header can make the loader allocate (65536 × 585 bytes ≈ 37 MiB).
pub const MAX_DESCRIPTORS: i64 = 1 << 16;

/// Positioned reads of an image held elsewhere (read-only use), e.g. a file whose bytes
/// are checked against what was verified earlier.
pub trait SharedReader: Send + Sync + std::fmt::Debug {
    /// The number of bytes the image holds.
    fn size(&self) -> io::Result<u64>;
    /// Reads up to `buf.len()` bytes at `offset`; 0 at the end.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

/// Where the image bytes live.
#[derive(Debug)]
pub(super) enum Backing {
    File { file: File, writable: bool },
    Memory(Vec<u8>),
    Shared(std::sync::Arc<dyn SharedReader>),
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the image was opened read-only",
    )
}

impl Backing {
    pub(super) fn len(&self) -> io::Result<u64> {
        match self {
            Backing::File { file, .. } => Ok(file.metadata()?.len()),
            Backing::Memory(v) => Ok(v.len() as u64),
            Backing::Shared(r) => r.size(),
        }
    }

    pub(super) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        match self {
            Backing::File { file, .. } => file.read_at(buf, offset),
            Backing::Shared(r) => r.read_at(buf, offset),
            Backing::Memory(v) => {
                let start = usize::try_from(offset).unwrap_or(usize::MAX).min(v.len());
                let src = &v[start..];
                let n = src.len().min(buf.len());
                buf[..n].copy_from_slice(&src[..n]);
                Ok(n)
            }
        }
    }

    pub(super) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Backing::File { file, .. } => file.read_exact_at(buf, offset),
            Backing::Memory(_) | Backing::Shared(_) => {
                if self.read_at(buf, offset)? == buf.len() {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "read past the end of the image",
                    ))
                }
            }
        }
    }

    pub(super) fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Backing::File { file, writable } => {
                if !*writable {
                    return Err(read_only());
                }
                file.write_all_at(buf, offset)
            }
            Backing::Shared(_) => Err(read_only()),
            Backing::Memory(v) => {
                let too_big = || io::Error::new(io::ErrorKind::OutOfMemory, "image too large");
                let start = usize::try_from(offset).map_err(|_| too_big())?;
                let end = start.checked_add(buf.len()).ok_or_else(too_big)?;
                if v.len() < end {
                    v.resize(end, 0);
                }
                v[start..end].copy_from_slice(buf);
                Ok(())
            }
        }
    }

    pub(super) fn set_len(&mut self, len: u64) -> io::Result<()> {
        match self {
            Backing::File { file, .. } => file.set_len(len),
            Backing::Shared(_) => Err(read_only()),
            Backing::Memory(v) => {
                let len = usize::try_from(len)
                    .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "image too large"))?;
                v.resize(len, 0);
                Ok(())
            }
        }
    }

    /// Flushes written data to the disk (a file's data and size; nothing for memory).
    pub(super) fn sync(&self) -> io::Result<()> {
        match self {
            Backing::File { file, .. } => file.sync_data(),
            Backing::Memory(_) | Backing::Shared(_) => Ok(()),
        }
    }

    pub(super) fn is_writable(&self) -> bool {
        match self {
            Backing::File { writable, .. } => *writable,
            Backing::Memory(_) => true,
            Backing::Shared(_) => false,
        }
    }
}

/// A descriptor slot as kept in memory.
#[derive(Debug, Clone)]
pub(super) enum SlotState {
    /// A free slot; its raw bytes when they are not all zero (written back unchanged).
    Free(Option<Box<[u8; DESCRIPTOR_LEN]>>),
    Used(Box<Descriptor>),
}

/// A validated SIF image.
#[derive(Debug)]
pub struct SifImage {
    pub(super) path: PathBuf,
    pub(super) backing: Backing,
    pub(super) len: u64,
    pub(super) header: Header,
    pub(super) slots: Vec<SlotState>,
}

impl SifImage {
    /// Opens and validates the image at `path`, read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<SifImage, SifError> {
        let path = path.as_ref();
        let file = File::open(path).map_err(|err| SifError::new(path, ErrorKind::Open { err }))?;
        SifImage::load(
            path.to_path_buf(),
            Backing::File {
                file,
                writable: false,
            },
        )
    }

    /// Opens and validates the image at `path` for reading and writing.
    pub fn open_rw(path: impl AsRef<Path>) -> Result<SifImage, SifError> {
        let path = path.as_ref();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|err| SifError::new(path, ErrorKind::Open { err }))?;
        SifImage::load(
            path.to_path_buf(),
            Backing::File {
                file,
                writable: true,
            },
        )
    }

    /// Validates an image from an already opened file (read-only use). `path` is only used in
    /// messages.
    pub fn from_file(file: File, path: impl Into<PathBuf>) -> Result<SifImage, SifError> {
        SifImage::load(
            path.into(),
            Backing::File {
                file,
                writable: false,
            },
        )
    }

    /// Validates an image read through `reader` (read-only use). `path` is only used in
    /// messages.
    pub fn from_shared(
        reader: std::sync::Arc<dyn SharedReader>,
        path: impl Into<PathBuf>,
    ) -> Result<SifImage, SifError> {
        SifImage::load(path.into(), Backing::Shared(reader))
    }

    /// Validates an image held in memory (tests, fuzzing). `name` is used in messages.
    pub fn from_bytes(bytes: Vec<u8>, name: impl Into<PathBuf>) -> Result<SifImage, SifError> {
        SifImage::load(name.into(), Backing::Memory(bytes))
    }

    fn load(path: PathBuf, backing: Backing) -> Result<SifImage, SifError> {
        let fail = |kind| SifError::new(&path, kind);
        let len = backing.len().map_err(|err| {
            fail(ErrorKind::Read {
                what: "file size",
                err,
            })
        })?;
        if len < HEADER_LEN as u64 {
            return Err(fail(ErrorKind::Truncated { len }));
        }
        let mut hbuf = [0u8; HEADER_LEN];
        backing.read_exact_at(&mut hbuf, 0).map_err(|err| {
            fail(ErrorKind::Read {
                what: "header",
                err,
            })
        })?;
        let header = Header::decode(&hbuf);
        validate_header(&header, len).map_err(fail)?;

        // Both bounded by validate_header: size = total × 585 ≤ file length and ≤ 37 MiB.
        let table_len = usize::try_from(header.descriptors_size).unwrap_or(0);
        let mut table = vec![0u8; table_len];
        if table_len > 0 {
            backing
                .read_exact_at(&mut table, header.descriptors_offset.unsigned_abs())
                .map_err(|err| {
                    fail(ErrorKind::Read {
                        what: "descriptor table",
                        err,
                    })
                })?;
        }
        let mut decoded = Vec::with_capacity(table_len / DESCRIPTOR_LEN);
        for chunk in table.chunks_exact(DESCRIPTOR_LEN) {
            let mut raw = [0u8; DESCRIPTOR_LEN];
            raw.copy_from_slice(chunk);
            decoded.push((Slot::decode(&raw), raw));
        }
        let slots = validate_objects(decoded, &header, len).map_err(fail)?;
        Ok(SifImage {
            path,
            backing,
            len,
            header,
            slots,
        })
    }

    /// The image path (or name) used in messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The global header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file length when the image was loaded or last written.
    pub fn file_len(&self) -> u64 {
        self.len
    }

    /// The underlying file (`None` for in-memory images), e.g. to hand its descriptor and a
    /// partition offset to the FUSE driver.
    pub fn file(&self) -> Option<&File> {
        match &self.backing {
            Backing::File { file, .. } => Some(file),
            Backing::Memory(_) | Backing::Shared(_) => None,
        }
    }

    /// Gives back the underlying file (`None` for in-memory images).
    pub fn into_file(self) -> Option<File> {
        match self.backing {
            Backing::File { file, .. } => Some(file),
            Backing::Memory(_) | Backing::Shared(_) => None,
        }
    }

    /// The in-memory bytes (`None` for file-backed images).
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match &self.backing {
            Backing::Memory(v) => Some(v),
            Backing::File { .. } | Backing::Shared(_) => None,
        }
    }

    /// The in-use descriptors, in slot order (which is also ID order for images the Go
    /// library wrote).
    pub fn objects(&self) -> impl Iterator<Item = &Descriptor> {
        self.slots.iter().filter_map(|s| match s {
            SlotState::Used(d) => Some(&**d),
            SlotState::Free(_) => None,
        })
    }

    /// The number of in-use descriptors.
    pub fn object_count(&self) -> usize {
        self.objects().count()
    }

    /// The object with `id`.
    pub fn object(&self, id: u32) -> Result<&Descriptor, SifError> {
        if self.object_count() == 0 {
            return Err(self.err(ErrorKind::NoObjects));
        }
        if id == 0 {
            return Err(self.err(ErrorKind::InvalidObjectId));
        }
        self.objects()
            .find(|d| d.id == id)
            .ok_or_else(|| self.err(ErrorKind::ObjectNotFound { id }))
    }

    /// The objects of type `dt`, in slot order.
    pub fn objects_of_type(&self, dt: DataType) -> impl Iterator<Item = &Descriptor> {
        self.objects().filter(move |d| d.data_type == dt)
    }

    /// The first object of type `dt` named `name` (e.g. the JSON.Generic object
    /// `inspect-metadata.json`).
    pub fn find_object(&self, dt: DataType, name: &str) -> Option<&Descriptor> {
        self.objects_of_type(dt)
            .find(|d| d.name() == name.as_bytes())
    }

    /// All the bytes of object `d`, refusing objects larger than `limit`.
    pub fn read_object(&self, d: &Descriptor, limit: u64) -> Result<Vec<u8>, SifError> {
        let range = d.range();
        let size = range.end - range.start;
        if size > limit {
            return Err(self.err(ErrorKind::ObjectTooLarge {
                id: d.id,
                size: d.size,
                limit,
            }));
        }
        // size ≤ limit, chosen by the caller, and ≤ the file length (validated on load).
        let mut buf = vec![0u8; usize::try_from(size).unwrap_or(0)];
        self.backing
            .read_exact_at(&mut buf, range.start)
            .map_err(|err| {
                self.err(ErrorKind::Read {
                    what: "object data",
                    err,
                })
            })?;
        Ok(buf)
    }

    /// Reads object bytes starting `pos` bytes into object `d`; returns how many were read
    /// (0 at or past the end of the object).
    pub fn read_object_at(
        &self,
        d: &Descriptor,
        pos: u64,
        buf: &mut [u8],
    ) -> Result<usize, SifError> {
        let range = d.range();
        let size = range.end - range.start;
        if pos >= size {
            return Ok(0);
        }
        let want = usize::try_from(size - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        self.backing
            .read_at(&mut buf[..want], range.start + pos)
            .map_err(|err| {
                self.err(ErrorKind::Read {
                    what: "object data",
                    err,
                })
            })
    }

    /// A `Read + Seek` view of object `d`'s bytes, bounded by its size.
    pub fn object_reader<'a>(&'a self, d: &Descriptor) -> ObjectReader<'a> {
        let range = d.range();
        ObjectReader {
            image: self,
            start: range.start,
            len: range.end - range.start,
            pos: 0,
        }
    }

    /// `d`'s ID relative to the smallest ID among the objects with the same raw group value
    /// (what the signature scheme stores).
    pub fn relative_id(&self, d: &Descriptor) -> u32 {
        let min = self
            .objects()
            .filter(|o| o.group_raw == d.group_raw)
            .map(|o| o.id)
            .min()
            .unwrap_or(d.id);
        d.id.saturating_sub(min)
    }

    /// The group numbers in use (objects in no group excluded), ascending.
    pub fn group_ids(&self) -> Vec<u32> {
        let mut ids: Vec<u32> = self.objects().filter_map(|d| d.group()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// The objects of group `group`, by ascending ID.
    pub fn group_objects(&self, group: u32) -> Vec<&Descriptor> {
        let mut v: Vec<&Descriptor> = self
            .objects()
            .filter(|d| d.group() == Some(group))
            .collect();
        v.sort_by_key(|d| d.id);
        v
    }

    /// The objects in no group, by ascending ID.
    pub fn ungrouped_objects(&self) -> Vec<&Descriptor> {
        let mut v: Vec<&Descriptor> = self.objects().filter(|d| d.group().is_none()).collect();
        v.sort_by_key(|d| d.id);
        v
    }

    /// The 61-byte header digest input (§9.1).
    pub fn header_digest_input(&self) -> [u8; HEADER_DIGEST_INPUT_LEN] {
        self.header.digest_input()
    }

    /// The 557-byte descriptor digest input of `d` (§9.1), with its relative ID.
    pub fn descriptor_digest_input(&self, d: &Descriptor) -> [u8; DESCRIPTOR_DIGEST_INPUT_LEN] {
        d.digest_input(self.relative_id(d))
    }

    pub(super) fn err(&self, kind: ErrorKind) -> SifError {
        SifError::new(&self.path, kind)
    }
}

/// A bounded `Read + Seek` view of one object's bytes.
#[derive(Debug)]
pub struct ObjectReader<'a> {
    image: &'a SifImage,
    start: u64,
    len: u64,
    pos: u64,
}

impl ObjectReader<'_> {
    /// The object size.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for an empty object.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Read for ObjectReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.len {
            return Ok(0);
        }
        let want = usize::try_from(self.len - self.pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self
            .image
            .backing
            .read_at(&mut buf[..want], self.start + self.pos)?;
        if n == 0 && want > 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the image file is shorter than the object",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ObjectReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let (base, delta) = match to {
            SeekFrom::Start(p) => (0i128, i128::from(p)),
            SeekFrom::End(d) => (i128::from(self.len), i128::from(d)),
            SeekFrom::Current(d) => (i128::from(self.pos), i128::from(d)),
        };
        let target = base + delta;
        if target < 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the object",
            ));
        }
        self.pos = u64::try_from(target).unwrap_or(u64::MAX);
        Ok(self.pos)
    }
}

/// Printable form of raw header bytes, for messages.
fn printable(b: &[u8]) -> String {
    b.escape_ascii().to_string()
}

/// Checks the header against the file length.
fn validate_header(h: &Header, len: u64) -> Result<(), ErrorKind> {
    if h.magic != MAGIC {
        return Err(ErrorKind::BadMagic {
            found: printable(&h.magic),
        });
    }
    if h.version != VERSION {
        return Err(ErrorKind::UnsupportedVersion {
            found: printable(&h.version),
        });
    }
    let total = h.descriptors_total;
    if !(0..=MAX_DESCRIPTORS).contains(&total) {
        return Err(ErrorKind::AbsurdDescriptorCount {
            total,
            max: MAX_DESCRIPTORS,
        });
    }
    // total ≤ 2^16, so this cannot overflow.
    if h.descriptors_size != total * DESCRIPTOR_LEN as i64 {
        return Err(ErrorKind::DescriptorTableSize {
            total,
            size: h.descriptors_size,
        });
    }
    if h.descriptors_size > 0 {
        if h.descriptors_offset < HEADER_LEN as i64 {
            return Err(ErrorKind::DescriptorTableOverlapsHeader {
                offset: h.descriptors_offset,
            });
        }
        let end = h.descriptors_offset.checked_add(h.descriptors_size);
        if end.is_none_or(|e| e.unsigned_abs() > len) {
            return Err(ErrorKind::DescriptorTableOutside {
                offset: h.descriptors_offset,
                size: h.descriptors_size,
                len,
            });
        }
    }
    if !(0..=total).contains(&h.descriptors_free) {
        return Err(ErrorKind::FreeCount {
            free: h.descriptors_free,
            total,
        });
    }
    Ok(())
}

/// End of the header and descriptor table: no object data may start before it.
pub(super) fn reserved_end(h: &Header) -> u64 {
    let table_end = if h.descriptors_size > 0 {
        h.descriptors_offset
            .saturating_add(h.descriptors_size)
            .max(0)
            .unsigned_abs()
    } else {
        0
    };
    table_end.max(HEADER_LEN as u64)
}

/// Checks every in-use descriptor: known type, a usable and unique ID, data inside the file,
/// clear of the header and table, and not overlapping another object.
fn validate_objects(
    decoded: Vec<(Slot, [u8; DESCRIPTOR_LEN])>,
    h: &Header,
    len: u64,
) -> Result<Vec<SlotState>, ErrorKind> {
    let reserved = reserved_end(h);
    let mut ids = HashSet::new();
    let mut ranges: Vec<(u64, u64, u32)> = Vec::new();
    let mut slots = Vec::with_capacity(decoded.len());
    for (slot, (decoded, raw)) in decoded.into_iter().enumerate() {
        let d = match decoded {
            Slot::Free => {
                let keep = raw.iter().any(|&b| b != 0).then(|| Box::new(raw));
                slots.push(SlotState::Free(keep));
                continue;
            }
            Slot::UnknownType { id, raw } => {
                return Err(ErrorKind::UnknownDataType { slot, id, raw });
            }
            Slot::Used(d) => d,
        };
        if d.id == 0 {
            return Err(ErrorKind::ZeroObjectId { slot });
        }
        if !ids.insert(d.id) {
            return Err(ErrorKind::DuplicateObjectId { id: d.id });
        }
        let out_of_range = ErrorKind::ObjectOutOfRange {
            id: d.id,
            offset: d.offset,
            size: d.size,
            len,
        };
        if d.offset < 0 || d.size < 0 {
            return Err(out_of_range);
        }
        let start = d.offset.unsigned_abs();
        let end = match d.offset.checked_add(d.size) {
            Some(e) if e.unsigned_abs() <= len => e.unsigned_abs(),
            _ => return Err(out_of_range),
        };
        if end > start {
            if start < reserved {
                return Err(ErrorKind::ObjectOverlapsTable {
                    id: d.id,
                    offset: d.offset,
                    size: d.size,
                });
            }
            ranges.push((start, end, d.id));
        }
        slots.push(SlotState::Used(d));
    }
    ranges.sort_unstable();
    for w in ranges.windows(2) {
        if w[0].1 > w[1].0 {
            return Err(ErrorKind::ObjectsOverlap {
                a: w[0].2,
                b: w[1].2,
            });
        }
    }
    Ok(slots)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::image::sif::descriptor::{Extra, PartitionMeta};
    use crate::image::sif::types::{Arch, FsType, PartType};
    use crate::image::sif::writer::{CreateOptions, ObjectInput, When};

    /// A deterministic image: object 1 = generic "abc" (group 1), object 2 = a 4-byte
    /// squashfs PrimSys partition (group 1), object 3 = JSON `{}` named data.json, no group.
    pub(crate) fn sample_bytes() -> Vec<u8> {
        let mut img =
            SifImage::create_in_memory("mem.sif", &CreateOptions::deterministic()).expect("create");
        let mut data: &[u8] = b"abc";
        img.add_object(ObjectInput::new(DataType::Generic, &mut data), When::Auto)
            .expect("add 1");
        let mut data: &[u8] = b"hsqs";
        let mut input = ObjectInput::new(DataType::Partition, &mut data);
        input.extra = Extra::Partition(PartitionMeta {
            fs_type: FsType::Squashfs,
            part_type: PartType::PrimSys,
            arch_code: Arch::Amd64.code(),
        });
        img.add_object(input, When::Auto).expect("add 2");
        let mut data: &[u8] = b"{}";
        let mut input = ObjectInput::new(DataType::GenericJson, &mut data);
        input.group = None;
        input.name = b"data.json".to_vec();
        img.add_object(input, When::Auto).expect("add 3");
        img.as_bytes().expect("memory").to_vec()
    }

    fn load(bytes: Vec<u8>) -> Result<SifImage, ErrorKind> {
        SifImage::from_bytes(bytes, "t.sif").map_err(|e| e.kind)
    }

    fn put_i64(b: &mut [u8], at: usize, v: i64) {
        b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    }

    fn put_u32(b: &mut [u8], at: usize, v: u32) {
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Offset of field `at` of descriptor slot `slot`.
    fn desc(slot: usize, at: usize) -> usize {
        4096 + slot * DESCRIPTOR_LEN + at
    }

    /// Runs every query and formatter; must never panic.
    pub(crate) fn exercise(img: &SifImage) {
        crate::image::sif::fuzzing::exercise(img);
    }

    fn fixture(name: &str) -> Option<Vec<u8>> {
        let dir = std::env::var_os("SIFR_TESTDATA")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/testdata"));
        std::fs::read(dir.join("sif").join(name)).ok()
    }

    #[test]
    fn test_sample_loads_and_queries() {
        let img = load(sample_bytes()).expect("valid");
        assert_eq!(img.object_count(), 3);
        let ids: Vec<u32> = img.objects().map(|d| d.id).collect();
        assert_eq!(ids, [1, 2, 3]);
        let d = img.object(1).expect("object 1");
        assert_eq!(img.read_object(d, 3).expect("read"), b"abc");
        assert!(matches!(
            img.read_object(d, 2).map_err(|e| e.kind),
            Err(ErrorKind::ObjectTooLarge { .. })
        ));
        let mut buf = [0u8; 8];
        assert_eq!(img.read_object_at(d, 1, &mut buf).expect("read"), 2);
        assert_eq!(&buf[..2], b"bc");
        assert_eq!(img.read_object_at(d, 3, &mut buf).expect("read"), 0);
        let mut r = img.object_reader(d);
        r.seek(SeekFrom::End(-1)).expect("seek");
        let mut s = Vec::new();
        r.read_to_end(&mut s).expect("read");
        assert_eq!(s, b"c");
        assert!(r.seek(SeekFrom::Current(-5)).is_err());
        assert_eq!(
            img.find_object(DataType::GenericJson, "data.json")
                .map(|d| d.id),
            Some(3)
        );
        assert!(img.find_object(DataType::GenericJson, "nope").is_none());
        assert_eq!(img.objects_of_type(DataType::Partition).count(), 1);
        assert_eq!(img.group_ids(), [1]);
        assert_eq!(img.group_objects(1).len(), 2);
        assert_eq!(img.ungrouped_objects().len(), 1);
        assert!(matches!(
            img.object(0).map_err(|e| e.kind),
            Err(ErrorKind::InvalidObjectId)
        ));
        assert!(matches!(
            img.object(9).map_err(|e| e.kind),
            Err(ErrorKind::ObjectNotFound { id: 9 })
        ));
    }

    #[test]
    fn test_relative_ids_and_digest_input() {
        let img = load(sample_bytes()).expect("valid");
        let d2 = img.object(2).expect("2");
        let d3 = img.object(3).expect("3");
        assert_eq!(img.relative_id(d2), 1);
        assert_eq!(img.relative_id(d3), 0);
        let input = img.descriptor_digest_input(d2);
        assert_eq!(&input[5..9], &1u32.to_le_bytes());
    }

    #[test]
    fn test_no_objects() {
        let img =
            SifImage::create_in_memory("e.sif", &CreateOptions::deterministic()).expect("create");
        let img = load(img.as_bytes().expect("mem").to_vec()).expect("valid");
        assert!(matches!(
            img.object(1).map_err(|e| e.kind),
            Err(ErrorKind::NoObjects)
        ));
    }

    #[test]
    fn test_truncated() {
        let b = sample_bytes();
        assert!(matches!(
            load(b[..100].to_vec()),
            Err(ErrorKind::Truncated { len: 100 })
        ));
        assert!(matches!(
            load(Vec::new()),
            Err(ErrorKind::Truncated { len: 0 })
        ));
        assert!(matches!(
            load(b[..5000].to_vec()),
            Err(ErrorKind::DescriptorTableOutside { .. })
        ));
        // Cut inside the last object's data.
        let len = b.len();
        assert!(matches!(
            load(b[..len - 1].to_vec()),
            Err(ErrorKind::ObjectOutOfRange { id: 3, .. })
        ));
    }

    #[test]
    fn test_wrong_magic_and_version() {
        let mut b = sample_bytes();
        b[32] = b'X';
        assert!(matches!(load(b), Err(ErrorKind::BadMagic { .. })));
        let mut b = sample_bytes();
        b[42..45].copy_from_slice(b"02\0");
        assert!(matches!(load(b), Err(ErrorKind::UnsupportedVersion { .. })));
    }

    #[test]
    fn test_absurd_counts_and_table_errors() {
        for total in [1i64 << 40, -1, i64::MAX, i64::MIN, MAX_DESCRIPTORS + 1] {
            let mut b = sample_bytes();
            put_i64(&mut b, 88, total);
            assert!(
                matches!(load(b), Err(ErrorKind::AbsurdDescriptorCount { .. })),
                "total {total}"
            );
        }
        let mut b = sample_bytes();
        put_i64(&mut b, 104, 585 * 48 + 1);
        assert!(matches!(
            load(b),
            Err(ErrorKind::DescriptorTableSize { .. })
        ));
        // A large but allowed count whose table does not fit in the file.
        let mut b = sample_bytes();
        put_i64(&mut b, 88, MAX_DESCRIPTORS);
        put_i64(&mut b, 104, MAX_DESCRIPTORS * 585);
        assert!(matches!(
            load(b),
            Err(ErrorKind::DescriptorTableOutside { .. })
        ));
        let mut b = sample_bytes();
        put_i64(&mut b, 96, i64::MAX - 10);
        assert!(matches!(
            load(b),
            Err(ErrorKind::DescriptorTableOutside { .. })
        ));
        let mut b = sample_bytes();
        put_i64(&mut b, 96, 100);
        assert!(matches!(
            load(b),
            Err(ErrorKind::DescriptorTableOverlapsHeader { offset: 100 })
        ));
        for free in [49, -1] {
            let mut b = sample_bytes();
            put_i64(&mut b, 80, free);
            assert!(matches!(load(b), Err(ErrorKind::FreeCount { .. })));
        }
    }

    #[test]
    fn test_bad_descriptors() {
        let mut b = sample_bytes();
        b[desc(1, 0)..desc(1, 4)].copy_from_slice(&0x4100i32.to_le_bytes());
        assert!(matches!(
            load(b),
            Err(ErrorKind::UnknownDataType {
                slot: 1,
                id: 2,
                raw: 0x4100
            })
        ));
        let mut b = sample_bytes();
        put_u32(&mut b, desc(0, 5), 0);
        assert!(matches!(load(b), Err(ErrorKind::ZeroObjectId { slot: 0 })));
        let mut b = sample_bytes();
        put_u32(&mut b, desc(2, 5), 1);
        assert!(matches!(
            load(b),
            Err(ErrorKind::DuplicateObjectId { id: 1 })
        ));
        let mut b = sample_bytes();
        let len = b.len() as i64;
        put_i64(&mut b, desc(0, 17), len);
        assert!(matches!(
            load(b),
            Err(ErrorKind::ObjectOutOfRange { id: 1, .. })
        ));
        let mut b = sample_bytes();
        put_i64(&mut b, desc(0, 25), -1);
        assert!(matches!(
            load(b),
            Err(ErrorKind::ObjectOutOfRange { id: 1, .. })
        ));
        let mut b = sample_bytes();
        put_i64(&mut b, desc(0, 17), i64::MAX);
        assert!(matches!(
            load(b),
            Err(ErrorKind::ObjectOutOfRange { id: 1, .. })
        ));
        let mut b = sample_bytes();
        put_i64(&mut b, desc(0, 17), 4096);
        assert!(matches!(
            load(b),
            Err(ErrorKind::ObjectOverlapsTable { id: 1, .. })
        ));
        // Object 3 moved onto object 2's data.
        let mut b = sample_bytes();
        let off2 = i64::from_le_bytes(b[desc(1, 17)..desc(1, 25)].try_into().expect("8"));
        put_i64(&mut b, desc(2, 17), off2 + 1);
        assert!(matches!(
            load(b),
            Err(ErrorKind::ObjectsOverlap { a: 2, b: 3 })
        ));
        // Empty objects overlap nothing.
        let mut b = sample_bytes();
        put_i64(&mut b, desc(2, 17), off2);
        put_i64(&mut b, desc(2, 25), 0);
        assert!(load(b).is_ok());
    }

    #[test]
    fn test_free_slots_are_ignored_and_kept() {
        let mut b = sample_bytes();
        // Garbage in a free slot (used = 0), including an unknown data type.
        b[desc(5, 0)..desc(6, 0)].fill(0xEE);
        b[desc(5, 4)] = 0;
        let mut img = load(b.clone()).expect("free slot garbage is ignored");
        assert_eq!(img.object_count(), 3);
        img.set_primary_partition(2, When::Auto)
            .expect("no-op rewrite");
        img.delete_object(3, Default::default(), When::Auto)
            .expect("delete");
        let out = img.as_bytes().expect("mem");
        assert_eq!(&out[desc(5, 0)..desc(6, 0)], &b[desc(5, 0)..desc(6, 0)]);
    }

    #[test]
    fn test_validation_errors_name_the_file() {
        let e = SifImage::from_bytes(vec![0; 10], "/some/where.sif").expect_err("invalid");
        assert!(e.to_string().contains("(/some/where.sif)"));
        let e = SifImage::open("/nonexistent/x.sif").expect_err("missing");
        assert!(
            e.to_string()
                .starts_with("cannot read SIF image (/nonexistent/x.sif): ")
        );
    }

    #[test]
    fn test_no_panic_on_any_truncation() {
        let b = fixture("one-group-signed-pgp.sif").unwrap_or_else(sample_bytes);
        for len in 0..=b.len() {
            if let Ok(img) = SifImage::from_bytes(b[..len].to_vec(), "t.sif") {
                exercise(&img);
            }
        }
    }

    #[test]
    fn test_no_panic_on_corrupt_header_and_descriptor_bytes() {
        let b = sample_bytes();
        let fields: Vec<usize> = (0..HEADER_LEN).chain(desc(0, 0)..desc(2, 0)).collect();
        for &i in &fields {
            for v in [0x00, 0x01, 0x7F, 0x80, 0xFF] {
                let mut c = b.clone();
                c[i] = v;
                if let Ok(img) = SifImage::from_bytes(c, "t.sif") {
                    exercise(&img);
                }
            }
        }
    }
}
