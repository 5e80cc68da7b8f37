//! Creating and modifying SIF images the way the Go library (sylabs/sif v2) does: creation
//! defaults, object placement and alignment, add / delete / set-primary / set-metadata, and
//! the write order data → descriptor table → header.

use std::fs::OpenOptions;
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use super::descriptor::{DESCRIPTOR_LEN, Descriptor, EXTRA_LEN, Extra, GROUP_MASK, Link, NAME_LEN};
use super::error::{ErrorKind, SifError};
use super::header::{GO_ZERO_TIME, HEADER_LEN, Header, LAUNCH_SCRIPT_LEN, MAGIC, VERSION};
use super::image::{Backing, MAX_DESCRIPTORS, SifImage, SlotState, reserved_end};
use super::types::{Arch, DataType, PartType};

/// Default descriptor capacity (what `siftool new` and `apptainer build` use).
pub const DEFAULT_CAPACITY: i64 = 48;
/// Offset of the descriptor table in images this library creates.
pub const DESCRIPTORS_OFFSET: i64 = 4096;
/// Default alignment of partitions.
pub const PARTITION_ALIGNMENT: i64 = 4096;
/// How far past the end of the file a corrupt data offset may point before adding is refused.
const DATA_OFFSET_SLACK: u64 = 1 << 20;

/// The most bytes past the last object that [`SifImage::append_object`] saves to put back
/// on an error (normally there are none: the last object ends the file).
pub const ROLLBACK_TAIL_MAX: u64 = 16 << 20;

/// The state of an image before an append: what is written back on an error.
struct Snapshot {
    len: u64,
    /// The header and descriptor table bytes as they were on disk.
    head: Vec<u8>,
    /// Bytes past the last object (offset, bytes), when there were some.
    tail: Option<(u64, Vec<u8>)>,
    header: Header,
    slots: Vec<SlotState>,
}

/// Which time a modification records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum When {
    /// The current time, or Go's zero time when the image is deterministic (nil UUID and zero
    /// header times), as the Go library does.
    #[default]
    Auto,
    /// The current time.
    Now,
    /// This Unix time.
    At(i64),
    /// Go's zero time (−62135596800).
    Deterministic,
}

impl When {
    fn resolve(self, header: Option<&Header>) -> i64 {
        match self {
            When::Auto if header.is_some_and(Header::is_deterministic) => GO_ZERO_TIME,
            When::Auto | When::Now => now(),
            When::At(t) => t,
            When::Deterministic => GO_ZERO_TIME,
        }
    }
}

fn now() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// The image UUID to create.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ImageId {
    /// A random (v4) UUID.
    #[default]
    Random,
    /// All zeros.
    Nil,
    /// This UUID.
    Given(uuid::Uuid),
}

/// Options for [`SifImage::create`].
#[derive(Debug, Clone)]
pub struct CreateOptions {
    /// Launch script (shorter than 32 bytes), e.g. `#!/usr/bin/env run-singularity\n`.
    pub launch_script: Vec<u8>,
    pub id: ImageId,
    /// Creation time (`Auto` and `Now` mean now).
    pub time: When,
    /// Descriptor slots.
    pub capacity: i64,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            launch_script: Vec::new(),
            id: ImageId::Random,
            time: When::Now,
            capacity: DEFAULT_CAPACITY,
        }
    }
}

impl CreateOptions {
    /// Nil UUID and Go zero time: the same inputs give the same bytes.
    pub fn deterministic() -> Self {
        CreateOptions {
            id: ImageId::Nil,
            time: When::Deterministic,
            ..CreateOptions::default()
        }
    }
}

/// A data object to add.
pub struct ObjectInput<'a> {
    pub data_type: DataType,
    /// The object's bytes (read to the end).
    pub data: &'a mut dyn Read,
    /// Group number, or `None` for no group. Defaults to group 1, as the Go library does.
    pub group: Option<u32>,
    pub link: Link,
    /// Alignment of the object's absolute offset; `None` = 4096 for partitions, none
    /// otherwise. Values ≤ 1 mean no alignment.
    pub alignment: Option<i64>,
    /// Name (at most 128 bytes).
    pub name: Vec<u8>,
    /// Type-specific metadata. OCI objects given `Extra::None` get the SHA-256 digest of
    /// their data.
    pub extra: Extra,
    /// Object time; defaults to the modification time.
    pub time: Option<i64>,
}

impl<'a> ObjectInput<'a> {
    /// An input with the Go library's defaults (group 1, no link, default alignment, no name).
    pub fn new(data_type: DataType, data: &'a mut dyn Read) -> Self {
        ObjectInput {
            data_type,
            data,
            group: Some(1),
            link: Link::None,
            alignment: None,
            name: Vec::new(),
            extra: Extra::None,
            time: None,
        }
    }
}

/// Options for [`SifImage::delete_object`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeleteOptions {
    /// Overwrite the object's data with zeros.
    pub zero: bool,
    /// Recompute the data size and truncate the file after the last remaining object.
    pub compact: bool,
}

/// The next offset at or after `offset` that is a multiple of `alignment` (no alignment for
/// values ≤ 1); `None` on overflow.
pub fn next_aligned(offset: i64, alignment: i64) -> Option<i64> {
    if alignment <= 1 || offset.rem_euclid(alignment) == 0 {
        return Some(offset);
    }
    offset.checked_add(alignment - offset.rem_euclid(alignment))
}

impl SifImage {
    /// Creates (or truncates) the image file at `path` (mode 0755) and writes an empty image.
    pub fn create(path: impl AsRef<Path>, opts: &CreateOptions) -> Result<SifImage, SifError> {
        let path = path.as_ref();
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o755)
            .open(path)
            .map_err(|err| SifError::new(path, ErrorKind::Open { err }))?;
        let backing = Backing::File {
            file,
            writable: true,
        };
        SifImage::create_in(path, backing, opts).inspect_err(|_| {
            let _ = std::fs::remove_file(path);
        })
    }

    /// Creates an empty image in memory (`name` is used in messages).
    pub fn create_in_memory(
        name: impl AsRef<Path>,
        opts: &CreateOptions,
    ) -> Result<SifImage, SifError> {
        SifImage::create_in(name.as_ref(), Backing::Memory(Vec::new()), opts)
    }

    fn create_in(
        path: &Path,
        backing: Backing,
        opts: &CreateOptions,
    ) -> Result<SifImage, SifError> {
        let fail = |kind| SifError::new(path, kind);
        if opts.launch_script.len() >= LAUNCH_SCRIPT_LEN {
            return Err(fail(ErrorKind::LaunchScriptTooLong {
                len: opts.launch_script.len(),
            }));
        }
        if !(0..=MAX_DESCRIPTORS).contains(&opts.capacity) {
            return Err(fail(ErrorKind::BadCapacity {
                capacity: opts.capacity,
                max: MAX_DESCRIPTORS,
            }));
        }
        let mut launch_script = [0u8; LAUNCH_SCRIPT_LEN];
        launch_script[..opts.launch_script.len()].copy_from_slice(&opts.launch_script);
        let id = match opts.id {
            ImageId::Random => *uuid::Uuid::new_v4().as_bytes(),
            ImageId::Nil => [0; 16],
            ImageId::Given(u) => *u.as_bytes(),
        };
        let t = opts.time.resolve(None);
        let size = opts.capacity * DESCRIPTOR_LEN as i64;
        let header = Header {
            launch_script,
            magic: MAGIC,
            version: VERSION,
            arch: Arch::Unknown.code(),
            id,
            created_at: t,
            modified_at: t,
            descriptors_free: opts.capacity,
            descriptors_total: opts.capacity,
            descriptors_offset: DESCRIPTORS_OFFSET,
            descriptors_size: size,
            data_offset: DESCRIPTORS_OFFSET + size,
            data_size: 0,
        };
        // capacity ≤ 2^16 was checked above.
        let slots = vec![SlotState::Free(None); usize::try_from(opts.capacity).unwrap_or(0)];
        let mut img = SifImage {
            path: path.to_path_buf(),
            backing,
            len: 0,
            header,
            slots,
        };
        img.write_table()?;
        img.write_header()?;
        Ok(img)
    }

    /// Adds a data object in the first free slot (ID = slot + 1), placing its data after the
    /// last object at the requested alignment. Returns the new object's ID.
    pub fn add_object(&mut self, input: ObjectInput<'_>, when: When) -> Result<u32, SifError> {
        self.add_object_with(input, when, false)
    }

    /// Appends a data object to an existing image as [`SifImage::add_object`] places it,
    /// so that a failure leaves the image as it was.
    ///
    /// Order: the data is written after the last object and synced to disk before the
    /// descriptor and then the header are written (and synced). A crash before the
    /// descriptor is written leaves only unreferenced bytes past the old end; the header
    /// (128 bytes at offset 0, one sector) is written last. On an error the header and
    /// descriptor table are written back as they were read, any bytes past the last object
    /// that were overwritten are put back (up to [`ROLLBACK_TAIL_MAX`]), and the file is cut
    /// back to its old length. In place rather than copy and rename: an image is often
    /// gigabytes, and the file keeps its inode, owner, mode and hard links.
    pub fn append_object(&mut self, input: ObjectInput<'_>, when: When) -> Result<u32, SifError> {
        self.check_writable()?;
        let saved = self.snapshot()?;
        match self.add_object_with(input, when, true) {
            Ok(id) => Ok(id),
            Err(e) => match self.restore(saved) {
                Ok(()) => Err(e),
                Err(err) => Err(self.err(ErrorKind::NotRestored {
                    cause: e.kind.to_string(),
                    err,
                })),
            },
        }
    }

    /// What [`SifImage::restore`] needs to undo an append.
    fn snapshot(&self) -> Result<Snapshot, SifError> {
        let read = |what: &'static str, err| self.err(ErrorKind::Read { what, err });
        let len = self.backing.len().map_err(|err| read("file size", err))?;
        let reserved = reserved_end(&self.header).min(len);
        let mut head = vec![0u8; usize::try_from(reserved).unwrap_or(0)];
        self.backing
            .read_exact_at(&mut head, 0)
            .map_err(|err| read("header and descriptor table", err))?;
        let end = self
            .header
            .data_offset
            .saturating_add(self.calculated_data_size())
            .max(0)
            .unsigned_abs()
            .max(reserved);
        let tail = match len.checked_sub(end) {
            Some(n) if n > 0 && n <= ROLLBACK_TAIL_MAX => {
                let mut buf = vec![0u8; usize::try_from(n).unwrap_or(0)];
                self.backing
                    .read_exact_at(&mut buf, end)
                    .map_err(|err| read("bytes after the last object", err))?;
                Some((end, buf))
            }
            _ => None,
        };
        Ok(Snapshot {
            len,
            head,
            tail,
            header: self.header.clone(),
            slots: self.slots.clone(),
        })
    }

    /// Puts the image back as [`SifImage::snapshot`] found it, on disk and in memory.
    fn restore(&mut self, saved: Snapshot) -> std::io::Result<()> {
        self.header = saved.header;
        self.slots = saved.slots;
        self.len = saved.len;
        self.backing.write_all_at(&saved.head, 0)?;
        if let Some((at, bytes)) = &saved.tail {
            self.backing.write_all_at(bytes, *at)?;
        }
        self.backing.set_len(saved.len)?;
        self.backing.sync()
    }

    fn sync(&self, what: &'static str) -> Result<(), SifError> {
        self.backing
            .sync()
            .map_err(|err| self.err(ErrorKind::Write { what, err }))
    }

    /// [`SifImage::add_object`]; `durable` syncs the data before the descriptor and header
    /// are written, and those after.
    fn add_object_with(
        &mut self,
        input: ObjectInput<'_>,
        when: When,
        durable: bool,
    ) -> Result<u32, SifError> {
        self.check_writable()?;
        let t = when.resolve(Some(&self.header));
        let dt = input.data_type;

        if input.name.len() > NAME_LEN {
            return Err(self.err(ErrorKind::NameTooLong {
                len: input.name.len(),
            }));
        }
        let group_raw = match input.group {
            Some(0) => return Err(self.err(ErrorKind::InvalidGroupId)),
            Some(g) => g | GROUP_MASK,
            None => GROUP_MASK,
        };
        match input.link {
            Link::Object(0) => return Err(self.err(ErrorKind::InvalidLink)),
            Link::Group(0) => return Err(self.err(ErrorKind::InvalidGroupId)),
            _ => {}
        }
        let types = input.extra.data_types();
        if !types.is_empty() && !types.contains(&dt) {
            return Err(self.err(ErrorKind::MetadataMismatch(dt.label())));
        }
        let primary = match &input.extra {
            Extra::Partition(p) => {
                if p.arch() == Arch::Unknown {
                    return Err(self.err(ErrorKind::UnknownArch));
                }
                (p.part_type == PartType::PrimSys).then_some(p.arch_code)
            }
            _ => None,
        };
        let mut extra = match input.extra.encode() {
            Some(e) => e,
            None => return Err(self.err(ErrorKind::ExtraTooLarge)),
        };

        let Some(slot) = self
            .slots
            .iter()
            .position(|s| matches!(s, SlotState::Free(_)))
        else {
            return Err(self.err(ErrorKind::NoCapacity));
        };
        if let Some(arch) = primary {
            if self
                .objects()
                .any(|d| d.is_partition_of_type(PartType::PrimSys))
            {
                return Err(self.err(ErrorKind::PrimaryExists));
            }
            self.header.arch = arch;
        }

        // Placement: after the end of the last object (never inside the header or table).
        let data_size = self.calculated_data_size();
        let unaligned = self
            .header
            .data_offset
            .checked_add(data_size)
            .ok_or_else(|| self.err(ErrorKind::TooLarge))?;
        let reserved = reserved_end(&self.header);
        let limit = self.len.max(reserved).saturating_add(DATA_OFFSET_SLACK);
        if unaligned < 0 || unaligned.unsigned_abs() < reserved || unaligned.unsigned_abs() > limit
        {
            return Err(self.err(ErrorKind::BadDataOffset {
                data_offset: self.header.data_offset,
            }));
        }
        let alignment = input.alignment.unwrap_or(if dt == DataType::Partition {
            PARTITION_ALIGNMENT
        } else {
            1
        });
        let offset =
            next_aligned(unaligned, alignment).ok_or_else(|| self.err(ErrorKind::TooLarge))?;

        let want_digest =
            matches!(dt, DataType::OciRootIndex | DataType::OciBlob) && input.extra == Extra::None;
        let (size, digest) = self.copy_in(input.data, offset, want_digest)?;
        if durable {
            self.sync("object data to disk")?;
        }
        if let Some(d) = digest {
            extra = [0u8; EXTRA_LEN];
            let text = format!("sha256:{d}");
            extra[..text.len()].copy_from_slice(text.as_bytes());
        }

        let mut name = [0u8; NAME_LEN];
        name[..input.name.len()].copy_from_slice(&input.name);
        let obj_time = input.time.unwrap_or(t);
        let id = u32::try_from(slot + 1).map_err(|_| self.err(ErrorKind::NoCapacity))?;
        let size_with_padding = offset - unaligned + size;
        self.slots[slot] = SlotState::Used(Box::new(Descriptor {
            data_type: dt,
            id,
            group_raw,
            link_raw: input.link.raw(),
            offset,
            size,
            size_with_padding,
            created_at: obj_time,
            modified_at: obj_time,
            uid: 0,
            gid: 0,
            name,
            extra,
        }));
        self.header.descriptors_free -= 1;
        self.header.data_size = data_size + size_with_padding;
        self.header.modified_at = t;
        self.write_table()?;
        if durable {
            self.sync("descriptor table to disk")?;
        }
        self.write_header()?;
        if durable {
            self.sync("header to disk")?;
        }
        Ok(id)
    }

    /// Deletes object `id`: its descriptor is zeroed and its slot freed. Without `compact` the
    /// data stays in the file (a hole).
    pub fn delete_object(
        &mut self,
        id: u32,
        opts: DeleteOptions,
        when: When,
    ) -> Result<(), SifError> {
        self.check_writable()?;
        let t = when.resolve(Some(&self.header));
        let d = self.object(id)?.clone();
        if opts.zero {
            let zeros = vec![0u8; 64 * 1024];
            let range = d.range();
            let mut pos = range.start;
            while pos < range.end {
                let n = usize::try_from(range.end - pos)
                    .unwrap_or(usize::MAX)
                    .min(zeros.len());
                self.write_at(&zeros[..n], pos, "object data")?;
                pos += n as u64;
            }
        }
        if d.is_partition_of_type(PartType::PrimSys) {
            self.header.arch = Arch::Unknown.code();
        }
        for s in self.slots.iter_mut() {
            if matches!(s, SlotState::Used(o) if o.id == id) {
                *s = SlotState::Free(None);
            }
        }
        self.header.descriptors_free += 1;
        self.header.modified_at = t;
        if opts.compact {
            self.header.data_size = self.calculated_data_size();
            let end = self
                .header
                .data_offset
                .saturating_add(self.header.data_size)
                .max(0)
                .unsigned_abs()
                .max(reserved_end(&self.header));
            self.backing.set_len(end).map_err(|err| {
                self.err(ErrorKind::Write {
                    what: "file size",
                    err,
                })
            })?;
            self.len = end;
        }
        self.write_table()?;
        self.write_header()
    }

    /// Makes system partition `id` the primary one; any other primary partition becomes a
    /// plain system partition. A primary target is left as it is.
    pub fn set_primary_partition(&mut self, id: u32, when: When) -> Result<(), SifError> {
        self.check_writable()?;
        let t = when.resolve(Some(&self.header));
        let d = self.object(id)?;
        let Some(mut meta) = d.partition() else {
            return Err(self.err(ErrorKind::NotPartition { id }));
        };
        match meta.part_type {
            PartType::PrimSys => return Ok(()),
            PartType::System => {}
            _ => return Err(self.err(ErrorKind::NotSystemPartition { id })),
        }
        self.primary_partition()?;
        for s in self.slots.iter_mut() {
            let SlotState::Used(o) = s else { continue };
            if let Some(mut old) = o.partition().filter(|p| p.part_type == PartType::PrimSys) {
                old.part_type = PartType::System;
                set_extra_bytes(&mut o.extra, &old.encode());
                o.modified_at = t;
            }
        }
        meta.part_type = PartType::PrimSys;
        if let Some(o) = self.object_mut(id) {
            set_extra_bytes(&mut o.extra, &meta.encode());
            o.modified_at = t;
        }
        self.header.arch = meta.arch_code;
        self.header.modified_at = t;
        self.write_table()?;
        self.write_header()
    }

    /// Replaces object `id`'s metadata (its "extra" field), e.g. partition metadata or an OCI
    /// digest. The metadata must belong to the object's data type.
    pub fn set_metadata(&mut self, id: u32, extra: &Extra, when: When) -> Result<(), SifError> {
        self.check_writable()?;
        let t = when.resolve(Some(&self.header));
        let dt = self.object(id)?.data_type;
        let types = extra.data_types();
        if !types.is_empty() && !types.contains(&dt) {
            return Err(self.err(ErrorKind::MetadataMismatch(dt.label())));
        }
        let Some(bytes) = extra.encode() else {
            return Err(self.err(ErrorKind::ExtraTooLarge));
        };
        if let Some(o) = self.object_mut(id) {
            o.extra = bytes;
            o.modified_at = t;
        }
        self.header.modified_at = t;
        self.write_table()?;
        self.write_header()
    }

    /// Sets the digest of an OCI root index or blob object.
    pub fn set_oci_digest(&mut self, id: u32, digest: &str, when: When) -> Result<(), SifError> {
        self.set_metadata(id, &Extra::OciDigest(digest.to_string()), when)
    }

    fn object_mut(&mut self, id: u32) -> Option<&mut Descriptor> {
        self.slots.iter_mut().find_map(|s| match s {
            SlotState::Used(o) if o.id == id => Some(&mut **o),
            _ => None,
        })
    }

    /// (End of the last object) − data offset, never negative.
    fn calculated_data_size(&self) -> i64 {
        let data_offset = self.header.data_offset;
        let end = self
            .objects()
            .map(|d| d.offset.saturating_add(d.size))
            .fold(data_offset, i64::max);
        end.saturating_sub(data_offset).max(0)
    }

    /// Streams `data` into the image at `offset`; returns the byte count and, when asked,
    /// the lowercase hex SHA-256 of the data.
    fn copy_in(
        &mut self,
        data: &mut dyn Read,
        offset: i64,
        digest: bool,
    ) -> Result<(i64, Option<String>), SifError> {
        let mut hasher = digest.then(Sha256::new);
        let mut buf = vec![0u8; 64 * 1024];
        let mut pos = offset.unsigned_abs();
        let mut total: i64 = 0;
        loop {
            let n = match data.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(err) => {
                    return Err(self.err(ErrorKind::Read {
                        what: "object input",
                        err,
                    }));
                }
            };
            self.write_at(&buf[..n], pos, "object data")?;
            if let Some(h) = hasher.as_mut() {
                h.update(&buf[..n]);
            }
            pos += n as u64;
            total = total
                .checked_add(n as i64)
                .ok_or_else(|| self.err(ErrorKind::TooLarge))?;
        }
        let hex = hasher.map(|h| {
            h.finalize()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        });
        Ok((total, hex))
    }

    fn check_writable(&self) -> Result<(), SifError> {
        if self.backing.is_writable() {
            Ok(())
        } else {
            Err(self.err(ErrorKind::ReadOnly))
        }
    }

    fn write_at(&mut self, buf: &[u8], offset: u64, what: &'static str) -> Result<(), SifError> {
        if let Err(err) = self.backing.write_all_at(buf, offset) {
            return Err(self.err(ErrorKind::Write { what, err }));
        }
        self.len = self.len.max(offset.saturating_add(buf.len() as u64));
        Ok(())
    }

    fn write_table(&mut self) -> Result<(), SifError> {
        let mut table = Vec::with_capacity(self.slots.len() * DESCRIPTOR_LEN);
        for s in &self.slots {
            match s {
                SlotState::Used(d) => table.extend_from_slice(&d.encode()),
                SlotState::Free(Some(raw)) => table.extend_from_slice(&raw[..]),
                SlotState::Free(None) => table.extend_from_slice(&[0u8; DESCRIPTOR_LEN]),
            }
        }
        if table.is_empty() {
            return Ok(());
        }
        let offset = self
            .header
            .descriptors_offset
            .max(HEADER_LEN as i64)
            .unsigned_abs();
        self.write_at(&table, offset, "descriptor table")
    }

    fn write_header(&mut self) -> Result<(), SifError> {
        let buf = self.header.encode();
        self.write_at(&buf, 0, "header")
    }
}

/// Go's `setExtra`: the encoded metadata, then zeros to the end of the field.
fn set_extra_bytes(extra: &mut [u8; EXTRA_LEN], bytes: &[u8]) {
    extra.fill(0);
    let n = bytes.len().min(EXTRA_LEN);
    extra[..n].copy_from_slice(&bytes[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sif::descriptor::PartitionMeta;
    use crate::image::sif::types::FsType;

    fn det() -> SifImage {
        SifImage::create_in_memory("w.sif", &CreateOptions::deterministic()).expect("create")
    }

    fn partition(fs: FsType, pt: PartType, arch: Arch) -> Extra {
        Extra::Partition(PartitionMeta {
            fs_type: fs,
            part_type: pt,
            arch_code: arch.code(),
        })
    }

    fn add(img: &mut SifImage, dt: DataType, data: &[u8], extra: Extra) -> Result<u32, ErrorKind> {
        let mut r = data;
        let mut input = ObjectInput::new(dt, &mut r);
        input.extra = extra;
        img.add_object(input, When::Auto).map_err(|e| e.kind)
    }

    fn reload(img: &SifImage) -> SifImage {
        SifImage::from_bytes(img.as_bytes().expect("mem").to_vec(), "r.sif").expect("valid")
    }

    #[test]
    fn test_next_aligned() {
        assert_eq!(next_aligned(32176, 4096), Some(32768));
        assert_eq!(next_aligned(32772, 4096), Some(36864));
        assert_eq!(next_aligned(36864, 4096), Some(36864));
        assert_eq!(next_aligned(5, 0), Some(5));
        assert_eq!(next_aligned(5, 1), Some(5));
        assert_eq!(next_aligned(5, -8), Some(5));
        assert_eq!(next_aligned(10, 3), Some(12));
        assert_eq!(next_aligned(i64::MAX - 1, 4096), None);
    }

    #[test]
    fn test_create_defaults() {
        let img = det();
        let h = img.header();
        assert_eq!(h.descriptors_total, 48);
        assert_eq!(h.descriptors_free, 48);
        assert_eq!(h.descriptors_offset, 4096);
        assert_eq!(h.descriptors_size, 48 * 585);
        assert_eq!(h.data_offset, 32176);
        assert_eq!(h.data_size, 0);
        assert_eq!(h.created_at, GO_ZERO_TIME);
        assert_eq!(h.id, [0; 16]);
        assert_eq!(img.as_bytes().map(<[u8]>::len), Some(32176));
        let opts = CreateOptions {
            launch_script: b"#!/usr/bin/env run-singularity\n".to_vec(),
            time: When::At(1000),
            ..CreateOptions::default()
        };
        let img = SifImage::create_in_memory("w.sif", &opts).expect("create");
        assert_ne!(img.header().id, [0; 16]);
        assert_eq!(img.header().created_at, 1000);
        assert_eq!(
            img.header().launch_script(),
            b"#!/usr/bin/env run-singularity\n"
        );
        let opts = CreateOptions {
            launch_script: vec![b'x'; 32],
            ..CreateOptions::default()
        };
        assert!(matches!(
            SifImage::create_in_memory("w.sif", &opts).map_err(|e| e.kind),
            Err(ErrorKind::LaunchScriptTooLong { len: 32 })
        ));
        let opts = CreateOptions {
            capacity: -1,
            ..CreateOptions::default()
        };
        assert!(SifImage::create_in_memory("w.sif", &opts).is_err());
    }

    #[test]
    fn test_placement_matches_go_library() {
        // one-group.sif: a 4-byte partition at 32768 (padding 596), a 4096-byte one at 36864.
        let mut img = det();
        add(
            &mut img,
            DataType::Partition,
            b"\xfa\xce\xfe\xed",
            partition(FsType::Raw, PartType::System, Arch::I386),
        )
        .expect("add 1");
        add(
            &mut img,
            DataType::Partition,
            &[0u8; 4096],
            partition(FsType::Squashfs, PartType::PrimSys, Arch::I386),
        )
        .expect("add 2");
        let d: Vec<(i64, i64, i64)> = img
            .objects()
            .map(|d| (d.offset, d.size, d.size_with_padding))
            .collect();
        assert_eq!(d, [(32768, 4, 596), (36864, 4096, 8188)]);
        assert_eq!(img.header().data_size, 8784);
        assert_eq!(img.header().arch(), Arch::I386);
        assert_eq!(img.header().descriptors_free, 46);
        // A non-partition object is not aligned.
        let id = add(&mut img, DataType::Generic, b"xyz", Extra::None).expect("add 3");
        assert_eq!(img.object(id).expect("3").offset, 40960);
        assert_eq!(reload(&img).object_count(), 3);
    }

    #[test]
    fn test_alignment_override_and_times() {
        let mut img = SifImage::create_in_memory(
            "w.sif",
            &CreateOptions {
                time: When::At(5),
                ..CreateOptions::default()
            },
        )
        .expect("create");
        let mut r: &[u8] = b"ab";
        let mut input = ObjectInput::new(DataType::Generic, &mut r);
        input.alignment = Some(100);
        input.time = Some(7);
        let id = img.add_object(input, When::At(9)).expect("add");
        let d = img.object(id).expect("obj");
        assert_eq!(d.offset, 32200);
        assert_eq!(d.size_with_padding, 24 + 2);
        assert_eq!((d.created_at, d.modified_at), (7, 7));
        assert_eq!(img.header().modified_at, 9);
        assert_eq!(img.header().created_at, 5);
        // A deterministic image keeps the zero time on Auto.
        let mut img = det();
        add(&mut img, DataType::Generic, b"a", Extra::None).expect("add");
        assert_eq!(img.header().modified_at, GO_ZERO_TIME);
        assert_eq!(img.object(1).expect("1").created_at, GO_ZERO_TIME);
    }

    #[test]
    fn test_add_rules() {
        let mut img = det();
        let sq = partition(FsType::Squashfs, PartType::PrimSys, Arch::Amd64);
        add(&mut img, DataType::Partition, b"hsqs", sq.clone()).expect("primary");
        assert_eq!(
            add(&mut img, DataType::Partition, b"hsqs", sq).map_err(|e| e.to_string()),
            Err("image already contains a primary partition".into())
        );
        assert!(matches!(
            add(
                &mut img,
                DataType::Partition,
                b"x",
                partition(FsType::Raw, PartType::Data, Arch::Unknown)
            ),
            Err(ErrorKind::UnknownArch)
        ));
        assert!(matches!(
            add(
                &mut img,
                DataType::Generic,
                b"x",
                partition(FsType::Raw, PartType::Data, Arch::I386)
            ),
            Err(ErrorKind::MetadataMismatch(_))
        ));
        let mut r: &[u8] = b"x";
        let mut input = ObjectInput::new(DataType::Generic, &mut r);
        input.name = vec![b'n'; 129];
        assert!(matches!(
            img.add_object(input, When::Auto).map_err(|e| e.kind),
            Err(ErrorKind::NameTooLong { len: 129 })
        ));
        let mut r: &[u8] = b"x";
        let mut input = ObjectInput::new(DataType::Generic, &mut r);
        input.group = Some(0);
        assert!(img.add_object(input, When::Auto).is_err());
        let mut r: &[u8] = b"x";
        let mut input = ObjectInput::new(DataType::Signature, &mut r);
        input.link = Link::Group(1);
        input.group = None;
        let id = img.add_object(input, When::Auto).expect("signature");
        let d = img.object(id).expect("sig");
        assert_eq!((d.group(), d.link()), (None, Link::Group(1)));
        assert_eq!(d.group_raw, GROUP_MASK);
    }

    #[test]
    fn test_capacity_and_slot_reuse() {
        let mut img = SifImage::create_in_memory(
            "w.sif",
            &CreateOptions {
                capacity: 2,
                ..CreateOptions::deterministic()
            },
        )
        .expect("create");
        assert_eq!(
            add(&mut img, DataType::Generic, b"1", Extra::None).ok(),
            Some(1)
        );
        assert_eq!(
            add(&mut img, DataType::Generic, b"2", Extra::None).ok(),
            Some(2)
        );
        assert!(matches!(
            add(&mut img, DataType::Generic, b"3", Extra::None),
            Err(ErrorKind::NoCapacity)
        ));
        img.delete_object(1, DeleteOptions::default(), When::Auto)
            .expect("delete");
        assert_eq!(img.header().descriptors_free, 1);
        assert_eq!(
            add(&mut img, DataType::Generic, b"3", Extra::None).ok(),
            Some(1)
        );
        let r = reload(&img);
        let d = r.object(1).expect("1");
        assert_eq!(r.read_object(d, 10).expect("read"), b"3");
        // Placed after the last object, not in the hole.
        assert_eq!(d.offset, r.object(2).expect("2").offset + 1);
    }

    #[test]
    fn test_delete_primary_zero_and_compact() {
        let mut img = det();
        add(&mut img, DataType::Generic, b"abc", Extra::None).expect("1");
        add(
            &mut img,
            DataType::Partition,
            b"hsqsdata",
            partition(FsType::Squashfs, PartType::PrimSys, Arch::Arm64),
        )
        .expect("2");
        assert_eq!(img.header().arch(), Arch::Arm64);
        let end = img.file_len();
        img.delete_object(
            2,
            DeleteOptions {
                zero: true,
                compact: false,
            },
            When::Auto,
        )
        .expect("delete");
        assert_eq!(img.header().arch(), Arch::Unknown);
        assert_eq!(img.file_len(), end);
        let bytes = img.as_bytes().expect("mem");
        assert_eq!(&bytes[32768..32776], &[0u8; 8]);
        assert_eq!(&bytes[4096 + 585..4096 + 2 * 585], &[0u8; 585][..]);
        img.delete_object(
            1,
            DeleteOptions {
                zero: false,
                compact: true,
            },
            When::Auto,
        )
        .expect("compact");
        assert_eq!(img.header().data_size, 0);
        assert_eq!(img.file_len(), 32176);
        assert_eq!(img.as_bytes().map(<[u8]>::len), Some(32176));
        assert!(matches!(
            img.delete_object(1, DeleteOptions::default(), When::Auto)
                .map_err(|e| e.kind),
            Err(ErrorKind::NoObjects)
        ));
        let r = reload(&img);
        assert_eq!(r.header().descriptors_free, 48);
    }

    #[test]
    fn test_set_primary_partition_rules() {
        let mut img = det();
        add(
            &mut img,
            DataType::Partition,
            b"a",
            partition(FsType::Squashfs, PartType::PrimSys, Arch::I386),
        )
        .expect("1");
        add(
            &mut img,
            DataType::Partition,
            b"b",
            partition(FsType::Ext3, PartType::System, Arch::Amd64),
        )
        .expect("2");
        add(
            &mut img,
            DataType::Partition,
            b"c",
            partition(FsType::Ext3, PartType::Data, Arch::Amd64),
        )
        .expect("3");
        add(&mut img, DataType::Generic, b"d", Extra::None).expect("4");
        assert!(matches!(
            img.set_primary_partition(4, When::Auto).map_err(|e| e.kind),
            Err(ErrorKind::NotPartition { id: 4 })
        ));
        assert!(matches!(
            img.set_primary_partition(3, When::Auto).map_err(|e| e.kind),
            Err(ErrorKind::NotSystemPartition { id: 3 })
        ));
        img.set_primary_partition(1, When::At(77)).expect("no-op");
        assert_eq!(img.header().modified_at, GO_ZERO_TIME);
        img.set_primary_partition(2, When::At(77)).expect("setprim");
        let r = reload(&img);
        let p1 = r.object(1).expect("1");
        let p2 = r.object(2).expect("2");
        assert_eq!(p1.partition().map(|p| p.part_type), Some(PartType::System));
        assert_eq!(p2.partition().map(|p| p.part_type), Some(PartType::PrimSys));
        assert_eq!((p1.modified_at, p2.modified_at), (77, 77));
        assert_eq!(r.header().arch(), Arch::Amd64);
        assert_eq!(r.header().modified_at, 77);
        assert_eq!(r.primary_partition().expect("one").map(|p| p.id), Some(2));
    }

    #[test]
    fn test_oci_digest_computed_and_settable() {
        let mut img = det();
        let id = add(&mut img, DataType::OciBlob, b"{}", Extra::None).expect("blob");
        // sha256("{}")
        assert_eq!(
            img.object(id).expect("blob").oci_digest(),
            Some(&b"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"[..])
        );
        img.set_oci_digest(id, "sha256:00", When::Auto)
            .expect("set");
        assert_eq!(
            img.object(id).expect("blob").oci_digest(),
            Some(&b"sha256:00"[..])
        );
        let g = add(&mut img, DataType::Generic, b"x", Extra::None).expect("generic");
        assert!(img.set_oci_digest(g, "sha256:00", When::Auto).is_err());
    }

    #[test]
    fn test_read_only_image_refuses_writes() {
        let bytes = det().as_bytes().expect("mem").to_vec();
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("ro.sif");
        std::fs::write(&path, bytes).expect("write");
        let mut img = SifImage::open(&path).expect("open");
        assert!(matches!(
            add(&mut img, DataType::Generic, b"x", Extra::None),
            Err(ErrorKind::ReadOnly)
        ));
        let mut img = SifImage::open_rw(&path).expect("open rw");
        add(&mut img, DataType::Generic, b"x", Extra::None).expect("add");
        let again = SifImage::open(&path).expect("reopen");
        assert_eq!(again.object_count(), 1);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), 32177);
    }

    /// Gives `left` bytes, then fails: a disk or pipe error in the middle of an object.
    struct FailAfter(usize);

    impl Read for FailAfter {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0 == 0 {
                return Err(std::io::Error::other("input failed"));
            }
            let n = buf.len().min(self.0);
            buf[..n].fill(7);
            self.0 -= n;
            Ok(n)
        }
    }

    fn overlay_input(data: &mut dyn Read) -> ObjectInput<'_> {
        let mut input = ObjectInput::new(DataType::Partition, data);
        input.extra = partition(FsType::Ext3, PartType::Overlay, Arch::Amd64);
        input
    }

    /// A failed append leaves the file byte for byte as it was (the data already written
    /// past the end is cut off, header and table untouched), and the image stays usable.
    #[test]
    fn test_append_object_failure_leaves_the_file_unchanged() {
        let dir = tempfile::tempdir().expect("tempdir");
        for garbage in [&b""[..], b"bytes after the last object"] {
            let path = dir.path().join("a.sif");
            let mut img = SifImage::create(&path, &CreateOptions::deterministic()).expect("new");
            add(&mut img, DataType::Generic, b"abc", Extra::None).expect("generic");
            drop(img);
            let mut f = OpenOptions::new().append(true).open(&path).expect("open");
            std::io::Write::write_all(&mut f, garbage).expect("garbage");
            drop(f);
            let before = std::fs::read(&path).expect("read");

            let mut img = SifImage::open_rw(&path).expect("open rw");
            let mut bad = FailAfter(300_000);
            let err = img
                .append_object(overlay_input(&mut bad), When::Auto)
                .expect_err("the input fails");
            assert!(matches!(err.kind, ErrorKind::Read { .. }), "{err}");
            assert!(
                std::fs::read(&path).expect("read") == before,
                "the failed append changed the file"
            );
            assert_eq!(img.object_count(), 1);
            // The same handle appends afterwards, where add_object would have put it.
            let mut good: &[u8] = &[9u8; 5000];
            let id = img
                .append_object(overlay_input(&mut good), When::Auto)
                .expect("append");
            assert_eq!(id, 2);
            let again = SifImage::open(&path).expect("reopen");
            let d = again.object(2).expect("overlay");
            assert_eq!(d.offset % PARTITION_ALIGNMENT, 0);
            assert_eq!(again.read_object(d, 10_000).expect("read"), vec![9u8; 5000]);
        }
    }

    /// What a crash between the steps of an append leaves is a valid image: the data
    /// written past the end without its descriptor (the old image), or the descriptor
    /// written but not the header (the new object, under the old header's counts).
    #[test]
    fn test_append_crash_states_load() {
        let mut img = det();
        add(&mut img, DataType::Generic, b"abc", Extra::None).expect("generic");
        let old = img.as_bytes().expect("mem").to_vec();
        let mut data: &[u8] = &[5u8; 9000];
        img.append_object(overlay_input(&mut data), When::Auto)
            .expect("append");
        let new = img.as_bytes().expect("mem").to_vec();
        let table = 4096..4096 + 48 * DESCRIPTOR_LEN;
        // Data written, table and header not.
        let mut a = new.clone();
        a[..HEADER_LEN].copy_from_slice(&old[..HEADER_LEN]);
        a[table.clone()].copy_from_slice(&old[table.clone()]);
        let r = SifImage::from_bytes(a, "a.sif").expect("loads");
        assert_eq!(r.object_count(), 1);
        // Data and table written, header not.
        let mut b = new.clone();
        b[..HEADER_LEN].copy_from_slice(&old[..HEADER_LEN]);
        let r = SifImage::from_bytes(b, "b.sif").expect("loads");
        assert_eq!(r.object_count(), 2);
        let d = r.object(2).expect("2");
        assert_eq!(r.read_object(d, 10_000).expect("read"), vec![5u8; 9000]);
    }

    /// An append gives the same bytes as `add_object` (same placement, descriptor, header).
    #[test]
    fn test_append_object_places_like_add_object() {
        let mut a = det();
        add(&mut a, DataType::Generic, b"abc", Extra::None).expect("generic");
        let mut b = reload(&a);
        let mut d1: &[u8] = &[1u8; 10_000];
        let mut d2: &[u8] = &[1u8; 10_000];
        a.add_object(overlay_input(&mut d1), When::Auto)
            .expect("add");
        b.append_object(overlay_input(&mut d2), When::Auto)
            .expect("append");
        assert_eq!(a.as_bytes(), b.as_bytes());
        // A refused append (no free slot) writes nothing either.
        let mut full = SifImage::create_in_memory(
            "w.sif",
            &CreateOptions {
                capacity: 0,
                ..CreateOptions::deterministic()
            },
        )
        .expect("create");
        let before = full.as_bytes().expect("mem").to_vec();
        let mut d3: &[u8] = b"x";
        assert!(matches!(
            full.append_object(overlay_input(&mut d3), When::Auto)
                .map_err(|e| e.kind),
            Err(ErrorKind::NoCapacity)
        ));
        assert_eq!(full.as_bytes().expect("mem"), &before[..]);
    }

    #[test]
    fn test_bad_data_offset_refused() {
        let mut b = det().as_bytes().expect("mem").to_vec();
        b[112..120].copy_from_slice(&100i64.to_le_bytes());
        let mut img = SifImage::from_bytes(b, "w.sif").expect("loads");
        assert!(matches!(
            add(&mut img, DataType::Generic, b"x", Extra::None),
            Err(ErrorKind::BadDataOffset { data_offset: 100 })
        ));
        let mut b = det().as_bytes().expect("mem").to_vec();
        b[112..120].copy_from_slice(&(1i64 << 50).to_le_bytes());
        let mut img = SifImage::from_bytes(b, "w.sif").expect("loads");
        assert!(matches!(
            add(&mut img, DataType::Generic, b"x", Extra::None),
            Err(ErrorKind::BadDataOffset { .. })
        ));
    }
}
