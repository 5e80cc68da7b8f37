//! The text `siftool` prints for `header`, `list` and `info`, byte for byte: Go's
//! tabwriter layout, `readableSize`, and Go's `time.Time` format
//! (`2020-06-30 00:01:56 +0000 UTC`). Formatting only; parsing lives in `image`.

use chrono::{DateTime, Datelike, Timelike};

use super::descriptor::{Descriptor, Link};
use super::error::{ErrorKind, SifError};
use super::header::{GO_ZERO_TIME, Header};
use super::image::SifImage;
use super::tabwriter::TabWriter;
use super::types::{Arch, DataType, HashType};

/// `siftool header`.
pub fn header_text(h: &Header) -> Vec<u8> {
    let mut tw = TabWriter::new(1);
    let script = h.launch_script();
    if !script.is_empty() {
        let script = script.strip_suffix(b"\n").unwrap_or(script);
        tw.write(b"Launch Script:\t");
        tw.write(script);
        tw.write(b"\n");
    }
    tw.write(b"Version:\t");
    tw.write(h.version_str());
    tw.write(b"\n");
    if h.arch() != Arch::Unknown {
        tw.write(format!("Primary Architecture:\t{}\n", h.arch().go_name()).as_bytes());
    }
    if h.id != [0; 16] {
        tw.write(format!("ID:\t{}\n", h.uuid()).as_bytes());
    }
    if h.created_at != GO_ZERO_TIME {
        tw.write(format!("Created At:\t{}\n", go_time(h.created_at)).as_bytes());
    }
    if h.modified_at != GO_ZERO_TIME {
        tw.write(format!("Modified At:\t{}\n", go_time(h.modified_at)).as_bytes());
    }
    let lines = format!(
        "Descriptors Free:\t{}\nDescriptors Total:\t{}\nDescriptors Offset:\t{}\n\
         Descriptors Size:\t{}\nData Offset:\t{}\nData Size:\t{}\n",
        h.descriptors_free,
        h.descriptors_total,
        h.descriptors_offset,
        readable_size(h.descriptors_size),
        h.data_offset,
        readable_size(h.data_size),
    );
    tw.write(lines.as_bytes());
    tw.finish()
}

const RULE: &str =
    "------------------------------------------------------------------------------\n";

/// `siftool list`.
pub fn list_text(img: &SifImage) -> Vec<u8> {
    let mut out = String::new();
    out.push_str(RULE);
    out.push_str(&format!(
        "{:<4} {:<8} {:<8} {:<26} {}\n",
        "ID", "|GROUP", "|LINK", "|SIF POSITION (start-end)", "|TYPE"
    ));
    out.push_str(RULE);
    for d in img.objects() {
        out.push_str(&format!("{:<4} ", d.id));
        match d.group() {
            None => out.push_str(&format!("|{:<7} ", "NONE")),
            Some(g) => out.push_str(&format!("|{g:<7} ")),
        }
        match d.link() {
            Link::None => out.push_str(&format!("|{:<7} ", "NONE")),
            Link::Group(g) => out.push_str(&format!("|{g:<3} (G) ")),
            Link::Object(o) => out.push_str(&format!("|{o:<7} ")),
        }
        let position = format!("|{}-{} ", d.offset, d.offset.wrapping_add(d.size));
        out.push_str(&format!("{position:<26} "));
        out.push_str(&list_type(d));
    }
    out.into_bytes()
}

/// The TYPE column with its trailing newline. Like siftool, a signature whose hash type
/// cannot be decoded gets nothing, not even the newline.
fn list_type(d: &Descriptor) -> String {
    let label = d.data_type.label();
    if let Some(p) = d.partition() {
        return format!(
            "|{label} ({}/{}/{})\n",
            p.fs_type.label(),
            p.part_type.label(),
            p.arch().go_name()
        );
    }
    if let Some(s) = d.signature() {
        return match s.hash_type {
            HashType::Unknown(_) => String::new(),
            h => format!("|{label} ({})\n", h.label()),
        };
    }
    if let Some(m) = d.crypto_message() {
        return format!("|{label} ({}/{})\n", m.format.label(), m.message.label());
    }
    if let Some(f) = d.sbom_format() {
        return format!("|{label} ({})\n", f.label());
    }
    format!("|{label}\n")
}

/// `siftool info <id>`. Fails, printing nothing, for a signature whose hash type cannot be
/// decoded (as siftool does).
pub fn info_text(img: &SifImage, d: &Descriptor) -> Result<Vec<u8>, SifError> {
    let mut tw = TabWriter::new(2);
    tw.write(format!("\tData Type:\t{}\n", d.data_type.label()).as_bytes());
    tw.write(format!("\tID:\t{}\n", d.id).as_bytes());
    match d.group() {
        None => tw.write(b"\tGroup ID:\tNONE\n"),
        Some(g) => tw.write(format!("\tGroup ID:\t{g}\n").as_bytes()),
    }
    match d.link() {
        Link::None => tw.write(b"\tLinked ID:\tNONE\n"),
        Link::Group(g) => tw.write(format!("\tLinked ID:\t{g} (G)\n").as_bytes()),
        Link::Object(o) => tw.write(format!("\tLinked ID:\t{o}\n").as_bytes()),
    }
    tw.write(format!("\tOffset:\t{}\n\tSize:\t{}\n", d.offset, d.size).as_bytes());
    if d.created_at != GO_ZERO_TIME {
        tw.write(format!("\tCreated At:\t{}\n", go_time(d.created_at)).as_bytes());
    }
    if d.modified_at != GO_ZERO_TIME {
        tw.write(format!("\tModified At:\t{}\n", go_time(d.modified_at)).as_bytes());
    }
    if !d.name().is_empty() {
        tw.write(b"\tName:\t");
        tw.write(d.name());
        tw.write(b"\n");
    }
    match d.data_type {
        DataType::Partition => {
            if let Some(p) = d.partition() {
                tw.write(
                    format!(
                        "\tFilesystem Type:\t{}\n\tPartition Type:\t{}\n\tArchitecture:\t{}\n",
                        p.fs_type.label(),
                        p.part_type.label(),
                        p.arch().go_name()
                    )
                    .as_bytes(),
                );
            }
        }
        DataType::Signature => {
            if let Some(s) = d.signature() {
                if let HashType::Unknown(raw) = s.hash_type {
                    return Err(img.err(ErrorKind::UnsupportedHash { id: d.id, raw }));
                }
                tw.write(format!("\tHash Type:\t{}\n", s.hash_type.label()).as_bytes());
                if let Some(fp) = s.fingerprint {
                    let hex: String = fp.iter().map(|b| format!("{b:02X}")).collect();
                    tw.write(format!("\tEntity:\t{hex}\n").as_bytes());
                }
            }
        }
        DataType::CryptoMessage => {
            if let Some(m) = d.crypto_message() {
                tw.write(
                    format!(
                        "\tFormat Type:\t{}\n\tMessage Type:\t{}\n",
                        m.format.label(),
                        m.message.label()
                    )
                    .as_bytes(),
                );
            }
        }
        DataType::Sbom => {
            if let Some(f) = d.sbom_format() {
                tw.write(format!("\tFormat:\t{}\n", f.label()).as_bytes());
            }
        }
        DataType::OciRootIndex | DataType::OciBlob => {
            if let Some(digest) = d.oci_digest() {
                tw.write(b"\tDigest:\t");
                tw.write(digest);
                tw.write(b"\n");
            }
        }
        _ => {}
    }
    Ok(tw.finish())
}

/// Go's `readableSize`: bytes below 1 KiB, else the rounded value in the largest binary unit
/// that keeps it at least 1.
pub fn readable_size(size: i64) -> String {
    if -1024 < size && size < 1024 {
        return format!("{size} B");
    }
    let units = b"KMGTPE";
    let mut div: u64 = 1024;
    let mut exp = 0usize;
    let mut n = size / 1024;
    while n <= -1024 || 1024 <= n {
        div *= 1024;
        exp += 1;
        n /= 1024;
    }
    let unit = units.get(exp).map_or('?', |&u| u as char);
    format!("{:.0} {unit}iB", (size as f64 / div as f64).round())
}

/// Go's `time.Unix(secs, 0).UTC().String()`: `2006-01-02 15:04:05 +0000 UTC`.
pub fn go_time(secs: i64) -> String {
    match DateTime::from_timestamp(secs, 0) {
        Some(t) => {
            let y = i64::from(t.year());
            let year = if y < 0 {
                format!("-{:04}", -y)
            } else {
                format!("{y:04}")
            };
            format!(
                "{year}-{:02}-{:02} {:02}:{:02}:{:02} +0000 UTC",
                t.month(),
                t.day(),
                t.hour(),
                t.minute(),
                t.second()
            )
        }
        // Beyond ±262000 years: not a real timestamp; say what is stored.
        None => format!("{secs} (Unix seconds, out of range)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_readable_size() {
        assert_eq!(readable_size(0), "0 B");
        assert_eq!(readable_size(1023), "1023 B");
        assert_eq!(readable_size(-1023), "-1023 B");
        assert_eq!(readable_size(1024), "1 KiB");
        assert_eq!(readable_size(28080), "27 KiB");
        assert_eq!(readable_size(8784), "9 KiB");
        assert_eq!(readable_size(270928), "265 KiB");
        assert_eq!(readable_size(1536), "2 KiB");
        assert_eq!(readable_size(-1024), "-1 KiB");
        assert_eq!(readable_size(1 << 20), "1 MiB");
        assert_eq!(readable_size(i64::MAX), "8 EiB");
        assert_eq!(readable_size(i64::MIN), "-8 EiB");
    }

    #[test]
    fn test_go_time() {
        assert_eq!(go_time(1_593_475_316), "2020-06-30 00:01:56 +0000 UTC");
        assert_eq!(go_time(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(go_time(GO_ZERO_TIME), "0001-01-01 00:00:00 +0000 UTC");
        assert_eq!(
            go_time(GO_ZERO_TIME - 86400 * 366),
            "0000-01-01 00:00:00 +0000 UTC"
        );
        assert!(go_time(GO_ZERO_TIME - 86400 * 367).starts_with("-0001-12-31"));
        assert!(go_time(253_402_300_800).starts_with("10000-01-01"));
        assert!(go_time(i64::MAX).contains("out of range"));
    }
}
