//! `sif`: the reference `siftool` commands (header, list, info, dump, new, add, del,
//! setprim) on top of the SIF library, with siftool's output byte for byte.

use std::fs::File;
use std::io::Write;
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};

use super::Context;
use crate::cli::sif::{AddArgs, SifArgs, SifCommand};
use crate::image::sif::display;
use crate::image::sif::{
    Arch, CreateOptions, DataType, DeleteOptions, Extra, FsType, HashType, Link, ObjectInput,
    PartType, PartitionMeta, SbomFormat, SifImage, When,
};

/// Runs one `sif` sub-command.
pub fn sif(_ctx: &Context, a: SifArgs) -> anyhow::Result<i32> {
    match a.command {
        SifCommand::Header { sif_path } => {
            let img = SifImage::open(&sif_path)?;
            stdout(&display::header_text(img.header()))?;
        }
        SifCommand::List { sif_path } => {
            let img = SifImage::open(&sif_path)?;
            stdout(&display::list_text(&img))?;
        }
        SifCommand::Info { id, sif_path } => {
            let img = SifImage::open(&sif_path)?;
            let d = img.object(id)?;
            stdout(&display::info_text(&img, d)?)?;
        }
        SifCommand::Dump { id, sif_path } => {
            let img = SifImage::open(&sif_path)?;
            let d = img.object(id)?;
            let mut reader = img.object_reader(d);
            let mut out = std::io::stdout().lock();
            std::io::copy(&mut reader, &mut out)
                .and_then(|_| out.flush())
                .with_context(|| {
                    format!(
                        "cannot dump object {id} ({}): writing to standard output",
                        sif_path.display()
                    )
                })?;
        }
        SifCommand::New { sif_path } => {
            SifImage::create(&sif_path, &CreateOptions::default())?;
        }
        SifCommand::Add(args) => add(&args)?,
        SifCommand::Del { id, sif_path } => {
            let mut img = SifImage::open_rw(&sif_path)?;
            img.delete_object(id, DeleteOptions::default(), When::Auto)?;
        }
        SifCommand::Setprim { id, sif_path } => {
            let mut img = SifImage::open_rw(&sif_path)?;
            img.set_primary_partition(id, When::Auto)?;
        }
    }
    Ok(0)
}

fn stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)
        .and_then(|_| out.flush())
        .context("cannot write to standard output")
}

/// `sif add`: turns siftool's flags into an object input, then adds it.
fn add(a: &AddArgs) -> anyhow::Result<()> {
    let image = a.sif_path.display();
    let fail = |why: String| anyhow!("cannot add object ({image}): {why}");

    let Some(dt) = DataType::from_siftool_number(a.datatype) else {
        return Err(fail(
            "--datatype is required, with a value from 1 to 11 (see 'sif add --help')".into(),
        ));
    };
    let mut object = open_object(&a.object_path)?;

    let mut input = ObjectInput::new(dt, &mut object);
    input.group = (a.groupid != 0).then_some(a.groupid);
    if let Some(link) = a.link {
        if link == 0 {
            return Err(fail("invalid --link 0 (object IDs start at 1)".into()));
        }
        input.link = Link::from_raw(link);
    }
    input.alignment = a.alignment;
    if let Some(name) = &a.filename {
        input.name = name.as_bytes().to_vec();
    }
    match dt {
        DataType::Partition => {
            if a.parttype == 0 || a.partfs == 0 || a.partarch == 0 {
                return Err(fail(
                    "with partition datatype, --partfs, --parttype and --partarch must be passed"
                        .into(),
                ));
            }
            let arch = Arch::from_number(i64::from(a.partarch)).ok_or_else(|| {
                fail(format!(
                    "unknown architecture: --partarch {} (use 1 to 13)",
                    a.partarch
                ))
            })?;
            input.extra = Extra::Partition(PartitionMeta {
                fs_type: FsType::from_raw(a.partfs),
                part_type: PartType::from_raw(a.parttype),
                arch_code: arch.code(),
            });
        }
        DataType::Signature => {
            let fp = decode_hex(&a.signentity)
                .map_err(|e| fail(format!("failed to decode signing entity fingerprint: {e}")))?;
            let hash_type = match HashType::from_raw(a.signhash) {
                HashType::Unknown(v) => {
                    return Err(fail(format!("invalid hash type: {v} (use 1 to 5)")));
                }
                h => h,
            };
            let fingerprint: [u8; 20] = fp.as_slice().try_into().map_err(|_| {
                fail(format!(
                    "invalid signing entity fingerprint length: got {}, want 20",
                    fp.len()
                ))
            })?;
            input.extra = Extra::Signature {
                hash_type,
                fingerprint,
            };
        }
        DataType::Sbom => {
            if a.sbomformat.is_empty() {
                return Err(fail(
                    "with SBOM datatype, --sbomformat must be passed".into(),
                ));
            }
            let format = SbomFormat::from_name(&a.sbomformat)
                .ok_or_else(|| fail(format!("invalid SBOM format: {}", a.sbomformat)))?;
            input.extra = Extra::Sbom(format);
        }
        _ => {}
    }

    let mut img = SifImage::open_rw(&a.sif_path)?;
    img.add_object(input, When::Auto)?;
    Ok(())
}

fn open_object(path: &Path) -> anyhow::Result<File> {
    let f = File::open(path)
        .with_context(|| format!("cannot open object file ({})", path.display()))?;
    let meta = f
        .metadata()
        .with_context(|| format!("cannot open object file ({})", path.display()))?;
    if meta.is_dir() {
        bail!(
            "cannot open object file ({}): it is a directory; give a file",
            path.display()
        );
    }
    Ok(f)
}

/// Go's `hex.DecodeString`: an even number of hex digits, either case.
fn decode_hex(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let digit = |c: u8| -> Result<u8, String> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("encoding/hex: invalid byte: {:?}", char::from(c))),
        }
    };
    let mut out = Vec::with_capacity(b.len() / 2);
    for pair in b.chunks(2) {
        match pair {
            [hi, lo] => out.push(digit(*hi)? << 4 | digit(*lo)?),
            [one] => {
                digit(*one)?;
                return Err("encoding/hex: odd length hex string".into());
            }
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_decode_hex() {
        assert_eq!(decode_hex(""), Ok(vec![]));
        assert_eq!(decode_hex("0aFf"), Ok(vec![0x0a, 0xff]));
        assert!(decode_hex("abc").is_err());
        assert!(decode_hex("zz").is_err());
    }
}
