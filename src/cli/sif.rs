//! `sif` flags: the reference `siftool` sub-commands (header, list, info, dump, new, add,
//! del, setprim) with its argument order and `add` flags. Integer flags take Go syntax
//! (`0x10`, `0o20`, `0b1`, `1_000`), as siftool's pflag does.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// `sif COMMAND ...`
#[derive(Debug, Args, Clone)]
#[command(arg_required_else_help = true)]
pub struct SifArgs {
    #[command(subcommand)]
    pub command: SifCommand,
}

/// The `sif` sub-commands.
#[derive(Debug, Subcommand, Clone)]
pub enum SifCommand {
    /// Display global header
    Header {
        #[arg(value_name = "sif_path")]
        sif_path: PathBuf,
    },
    /// List data objects
    List {
        #[arg(value_name = "sif_path")]
        sif_path: PathBuf,
    },
    /// Display data object info
    Info {
        #[arg(value_name = "id")]
        id: u32,
        #[arg(value_name = "sif_path")]
        sif_path: PathBuf,
    },
    /// Dump data object
    Dump {
        #[arg(value_name = "id")]
        id: u32,
        #[arg(value_name = "sif_path")]
        sif_path: PathBuf,
    },
    /// Create SIF image
    New {
        #[arg(value_name = "sif_path")]
        sif_path: PathBuf,
    },
    /// Add data object
    Add(AddArgs),
    /// Delete data object
    Del {
        #[arg(value_name = "id")]
        id: u32,
        #[arg(value_name = "sif_path")]
        sif_path: PathBuf,
    },
    /// Set primary system partition
    Setprim {
        #[arg(value_name = "id")]
        id: u32,
        #[arg(value_name = "sif_path")]
        sif_path: PathBuf,
    },
}

/// `sif add [flags] <sif_path> <object_path>`
#[derive(Debug, Args, Clone)]
pub struct AddArgs {
    /// the type of data to add: 1-Deffile, 2-EnvVar, 3-Labels, 4-Partition, 5-Signature,
    /// 6-GenericJSON, 7-Generic, 8-CryptoMessage, 9-SBOM, 10-OCI.RootIndex, 11-OCI.Blob
    #[arg(long, default_value = "0", value_parser = go_int, allow_hyphen_values = true)]
    pub datatype: i64,
    /// the type of partition (with --datatype 4): 1-System, 2-PrimSys, 3-Data, 4-Overlay
    #[arg(long, default_value = "0", value_parser = go_i32, allow_hyphen_values = true)]
    pub parttype: i32,
    /// the filesystem used (with --datatype 4): 1-Squash, 2-Ext3, 3-ImmuObj, 4-Raw,
    /// 5-EncryptedSquashfs, 6-GocryptfsSquashfs
    #[arg(long, default_value = "0", value_parser = go_i32, allow_hyphen_values = true)]
    pub partfs: i32,
    /// the main architecture used (with --datatype 4): 1-386, 2-amd64, 3-arm, 4-arm64,
    /// 5-ppc64, 6-ppc64le, 7-mips, 8-mipsle, 9-mips64, 10-mips64le, 11-s390x, 12-riscv64,
    /// 13-loong64
    #[arg(long, default_value = "0", value_parser = go_i32, allow_hyphen_values = true)]
    pub partarch: i32,
    /// the signature hash used (with --datatype 5): 1-SHA256, 2-SHA384, 3-SHA512,
    /// 4-BLAKE2s_256, 5-BLAKE2b_256
    #[arg(long, default_value = "0", value_parser = go_i32, allow_hyphen_values = true)]
    pub signhash: i32,
    /// the entity that signs (with --datatype 5), e.g.
    /// 433FE984155206BD962725E20E8713472A879943
    #[arg(long, default_value = "")]
    pub signentity: String,
    /// the SBOM format (with --datatype 9): cyclonedx-json, cyclonedx-xml, github-json,
    /// spdx-json, spdx-rdf, spdx-tag-value, spdx-yaml, syft-json
    #[arg(long, default_value = "")]
    pub sbomformat: String,
    /// set groupid [default: 0 = no group]
    #[arg(long, default_value = "0", value_parser = go_u32)]
    pub groupid: u32,
    /// set link pointer [default: 0]
    #[arg(long, value_parser = go_u32)]
    pub link: Option<u32>,
    /// set alignment [default: 4096 with --datatype 4-Partition, 0 otherwise]
    #[arg(long, value_parser = go_int, allow_hyphen_values = true)]
    pub alignment: Option<i64>,
    /// set logical filename/handle [default: none]
    #[arg(long)]
    pub filename: Option<String>,
    #[arg(value_name = "sif_path")]
    pub sif_path: PathBuf,
    #[arg(value_name = "object_path")]
    pub object_path: PathBuf,
}

/// Parses an integer literal the way Go's `strconv.ParseInt(s, 0, 64)` does: optional sign,
/// `0x`/`0o`/`0b`/leading-`0` prefixes, and `_` separators after a prefix.
pub fn go_int(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid syntax: {s:?} is not an integer");
    let (neg, body) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let lower = body.to_ascii_lowercase();
    let (radix, digits, prefixed) = if let Some(r) = lower.strip_prefix("0x") {
        (16, r.to_string(), true)
    } else if let Some(r) = lower.strip_prefix("0o") {
        (8, r.to_string(), true)
    } else if let Some(r) = lower.strip_prefix("0b") {
        (2, r.to_string(), true)
    } else if lower.len() > 1 && lower.starts_with('0') {
        (8, lower[1..].to_string(), true)
    } else {
        (10, lower.clone(), false)
    };
    if digits.is_empty() || (!prefixed && digits.contains('_')) {
        return Err(bad());
    }
    if digits.ends_with('_') || digits.contains("__") {
        return Err(bad());
    }
    let clean: String = digits.chars().filter(|&c| c != '_').collect();
    if clean.is_empty() || clean.starts_with(['+', '-']) {
        return Err(bad());
    }
    let mag = u64::from_str_radix(&clean, radix).map_err(|_| bad())?;
    let out_of_range = || format!("value out of range: {s}");
    if neg {
        if mag > i64::MAX.unsigned_abs() + 1 {
            return Err(out_of_range());
        }
        Ok(0i64.wrapping_sub_unsigned(mag))
    } else {
        i64::try_from(mag).map_err(|_| out_of_range())
    }
}

/// [`go_int`] limited to 32 bits (pflag's `Int32`).
pub fn go_i32(s: &str) -> Result<i32, String> {
    i32::try_from(go_int(s)?).map_err(|_| format!("value out of range: {s}"))
}

/// [`go_int`] for unsigned 32-bit values (pflag's `Uint32`).
pub fn go_u32(s: &str) -> Result<u32, String> {
    if s.starts_with('-') {
        return Err(format!("invalid syntax: {s:?} is not an unsigned integer"));
    }
    u32::try_from(go_int(s)?).map_err(|_| format!("value out of range: {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_go_int_syntax() {
        assert_eq!(go_int("12"), Ok(12));
        assert_eq!(go_int("-4"), Ok(-4));
        assert_eq!(go_int("+4"), Ok(4));
        assert_eq!(go_int("0x10"), Ok(16));
        assert_eq!(go_int("0X1f"), Ok(31));
        assert_eq!(go_int("010"), Ok(8));
        assert_eq!(go_int("0o10"), Ok(8));
        assert_eq!(go_int("0b101"), Ok(5));
        assert_eq!(go_int("0x_1_0"), Ok(16));
        assert_eq!(go_int("0"), Ok(0));
        assert_eq!(go_int("-9223372036854775808"), Ok(i64::MIN));
        assert!(go_int("1_0").is_err());
        assert!(go_int("").is_err());
        assert!(go_int("0x").is_err());
        assert!(go_int("abc").is_err());
        assert!(go_int("9223372036854775808").is_err());
        assert!(go_int("--1").is_err());
        assert_eq!(go_i32("2147483647"), Ok(i32::MAX));
        assert!(go_i32("2147483648").is_err());
        assert_eq!(go_u32("4294967295"), Ok(u32::MAX));
        assert!(go_u32("-1").is_err());
    }
}
