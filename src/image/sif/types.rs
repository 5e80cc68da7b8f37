//! SIF enumerations: data object types, partition file-system and partition types,
//! architecture codes, signature hash types, crypto-message and SBOM formats.
//!
//! Each type knows its on-disk value and the label `siftool` prints for it. Values this
//! version does not know are kept (`Unknown(raw)`) so that they survive a rewrite, except
//! for data types: an unknown data type makes the whole image invalid (see `image`).

/// The type of a data object (descriptor offset 0, int32).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DataType {
    /// 0x4001: the definition file the image was built from.
    Deffile,
    /// 0x4002: environment variables.
    EnvVar,
    /// 0x4003: labels (JSON).
    Labels,
    /// 0x4004: a file-system partition.
    Partition,
    /// 0x4005: a signature.
    Signature,
    /// 0x4006: generic JSON metadata (e.g. `inspect-metadata.json`).
    GenericJson,
    /// 0x4007: generic raw data.
    Generic,
    /// 0x4008: a cryptographic message (e.g. an encrypted rootfs key).
    CryptoMessage,
    /// 0x4009: a software bill of materials.
    Sbom,
    /// 0x400A: an OCI root index.
    OciRootIndex,
    /// 0x400B: an OCI blob.
    OciBlob,
}

impl DataType {
    /// Every data type, in on-disk value order.
    pub const ALL: [DataType; 11] = [
        DataType::Deffile,
        DataType::EnvVar,
        DataType::Labels,
        DataType::Partition,
        DataType::Signature,
        DataType::GenericJson,
        DataType::Generic,
        DataType::CryptoMessage,
        DataType::Sbom,
        DataType::OciRootIndex,
        DataType::OciBlob,
    ];

    /// The on-disk value.
    pub fn raw(self) -> i32 {
        0x4001 + self.siftool_number() - 1
    }

    /// The data type stored as `raw`, or `None` for a value this version does not know.
    pub fn from_raw(raw: i32) -> Option<DataType> {
        let n = raw.checked_sub(0x4000)?;
        DataType::from_siftool_number(i64::from(n))
    }

    /// The short number `siftool add --datatype N` takes (1 = Deffile … 11 = OCI blob).
    pub fn siftool_number(self) -> i32 {
        match self {
            DataType::Deffile => 1,
            DataType::EnvVar => 2,
            DataType::Labels => 3,
            DataType::Partition => 4,
            DataType::Signature => 5,
            DataType::GenericJson => 6,
            DataType::Generic => 7,
            DataType::CryptoMessage => 8,
            DataType::Sbom => 9,
            DataType::OciRootIndex => 10,
            DataType::OciBlob => 11,
        }
    }

    /// The data type for `siftool add --datatype N`.
    pub fn from_siftool_number(n: i64) -> Option<DataType> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        DataType::ALL.get(i).copied()
    }

    /// The label `siftool` prints.
    pub fn label(self) -> &'static str {
        match self {
            DataType::Deffile => "Def.FILE",
            DataType::EnvVar => "Env.Vars",
            DataType::Labels => "JSON.Labels",
            DataType::Partition => "FS",
            DataType::Signature => "Signature",
            DataType::GenericJson => "JSON.Generic",
            DataType::Generic => "Generic/Raw",
            DataType::CryptoMessage => "Cryptographic Message",
            DataType::Sbom => "SBOM",
            DataType::OciRootIndex => "OCI.RootIndex",
            DataType::OciBlob => "OCI.Blob",
        }
    }
}

/// Generates an int32 enumeration with known values, labels and an `Unknown(raw)` fallback.
macro_rules! int_enum {
    (
        $(#[$meta:meta])*
        $name:ident, unknown = $unknown:literal,
        { $( $(#[$vmeta:meta])* $variant:ident = $value:literal => $label:literal, )+ }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
            /// A value this version does not know, kept as stored.
            Unknown(i32),
        }

        impl $name {
            /// The on-disk value.
            pub fn raw(self) -> i32 {
                match self {
                    $( $name::$variant => $value, )+
                    $name::Unknown(v) => v,
                }
            }

            /// The variant for an on-disk value (`Unknown` for values not listed).
            pub fn from_raw(raw: i32) -> $name {
                match raw {
                    $( $value => $name::$variant, )+
                    v => $name::Unknown(v),
                }
            }

            /// The label `siftool` prints.
            pub fn label(self) -> &'static str {
                match self {
                    $( $name::$variant => $label, )+
                    $name::Unknown(_) => $unknown,
                }
            }
        }
    };
}

int_enum! {
    /// File-system type of a partition (partition extra, +0).
    FsType, unknown = "Unknown", {
        /// Squashfs, read-only.
        Squashfs = 1 => "Squashfs",
        /// Ext3, read-write (deprecated except for overlays).
        Ext3 = 2 => "Ext3",
        /// Immutable object archive.
        ImmuObj = 3 => "Archive",
        /// Raw data.
        Raw = 4 => "Raw",
        /// dm-crypt encrypted squashfs (needs root).
        EncryptedSquashfs = 5 => "Encrypted squashfs",
        /// Gocryptfs-encrypted squashfs (Apptainer only).
        GocryptfsSquashfs = 6 => "Gocryptfs squashfs",
    }
}

int_enum! {
    /// Partition type (partition extra, +4).
    PartType, unknown = "Unknown", {
        /// A system partition.
        System = 1 => "System",
        /// The primary system partition (the rootfs).
        PrimSys = 2 => "*System",
        /// A data partition.
        Data = 3 => "Data",
        /// An overlay partition.
        Overlay = 4 => "Overlay",
    }
}

int_enum! {
    /// Hash type of a signature object (signature extra, +0).
    HashType, unknown = "Unknown", {
        /// SHA-256.
        Sha256 = 1 => "SHA-256",
        /// SHA-384.
        Sha384 = 2 => "SHA-384",
        /// SHA-512.
        Sha512 = 3 => "SHA-512",
        /// BLAKE2s-256.
        Blake2s256 = 4 => "BLAKE2s-256",
        /// BLAKE2b-256.
        Blake2b256 = 5 => "BLAKE2b-256",
    }
}

int_enum! {
    /// Format of a crypto message (crypto-message extra, +0).
    FormatType, unknown = "Unknown", {
        /// OpenPGP.
        OpenPgp = 1 => "OpenPGP",
        /// PEM.
        Pem = 2 => "PEM",
    }
}

int_enum! {
    /// Kind of a crypto message (crypto-message extra, +4).
    MessageType, unknown = "Unknown", {
        /// OpenPGP clear signature.
        ClearSignature = 0x100 => "Clear Signature",
        /// PEM RSA-OAEP.
        RsaOaep = 0x200 => "RSA-OAEP",
    }
}

int_enum! {
    /// Format of an SBOM object (SBOM extra, +0).
    SbomFormat, unknown = "unknown", {
        /// CycloneDX (JSON).
        CycloneDxJson = 1 => "cyclonedx-json",
        /// CycloneDX (XML).
        CycloneDxXml = 2 => "cyclonedx-xml",
        /// GitHub dependency snapshot (JSON).
        GithubJson = 3 => "github-json",
        /// SPDX (JSON).
        SpdxJson = 4 => "spdx-json",
        /// SPDX (RDF/XML).
        SpdxRdf = 5 => "spdx-rdf",
        /// SPDX (tag/value).
        SpdxTagValue = 6 => "spdx-tag-value",
        /// SPDX (YAML).
        SpdxYaml = 7 => "spdx-yaml",
        /// Syft (JSON).
        SyftJson = 8 => "syft-json",
    }
}

impl SbomFormat {
    /// The format for a `siftool add --sbomformat` name (`github` is accepted for
    /// `github-json`, as siftool does).
    pub fn from_name(name: &str) -> Option<SbomFormat> {
        if name == "github" {
            return Some(SbomFormat::GithubJson);
        }
        (1..=8)
            .map(SbomFormat::from_raw)
            .find(|f| f.label() == name)
    }
}

/// A CPU architecture code (3 bytes: two ASCII digits and a NUL), used in the header and in
/// partition descriptors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Arch {
    /// `00`: unknown or none (also every code this version does not know).
    Unknown,
    I386,
    Amd64,
    Arm,
    Arm64,
    Ppc64,
    Ppc64le,
    Mips,
    Mipsle,
    Mips64,
    Mips64le,
    S390x,
    Riscv64,
    Loong64,
}

impl Arch {
    /// The known architectures, in code order (`01` … `13`).
    pub const KNOWN: [Arch; 13] = [
        Arch::I386,
        Arch::Amd64,
        Arch::Arm,
        Arch::Arm64,
        Arch::Ppc64,
        Arch::Ppc64le,
        Arch::Mips,
        Arch::Mipsle,
        Arch::Mips64,
        Arch::Mips64le,
        Arch::S390x,
        Arch::Riscv64,
        Arch::Loong64,
    ];

    /// The numeric code (0 for unknown, 1 … 13).
    pub fn number(self) -> u8 {
        match Arch::KNOWN.iter().position(|a| *a == self) {
            // KNOWN has 13 entries, so the position always fits.
            Some(i) => (i + 1) as u8,
            None => 0,
        }
    }

    /// The architecture for `siftool add --partarch N` (1 … 13).
    pub fn from_number(n: i64) -> Option<Arch> {
        let i = usize::try_from(n).ok()?.checked_sub(1)?;
        Arch::KNOWN.get(i).copied()
    }

    /// The 3-byte on-disk code.
    pub fn code(self) -> [u8; 3] {
        let n = self.number();
        [b'0' + n / 10, b'0' + n % 10, 0]
    }

    /// The architecture for an on-disk code; anything not exactly a known code is `Unknown`.
    pub fn from_code(code: &[u8; 3]) -> Arch {
        if code[2] != 0 || !code[0].is_ascii_digit() || !code[1].is_ascii_digit() {
            return Arch::Unknown;
        }
        let n = (code[0] - b'0') * 10 + (code[1] - b'0');
        Arch::from_number(i64::from(n)).unwrap_or(Arch::Unknown)
    }

    /// The Go (GOARCH) name, which `siftool` prints; `unknown` for `Unknown`.
    pub fn go_name(self) -> &'static str {
        match self {
            Arch::Unknown => "unknown",
            Arch::I386 => "386",
            Arch::Amd64 => "amd64",
            Arch::Arm => "arm",
            Arch::Arm64 => "arm64",
            Arch::Ppc64 => "ppc64",
            Arch::Ppc64le => "ppc64le",
            Arch::Mips => "mips",
            Arch::Mipsle => "mipsle",
            Arch::Mips64 => "mips64",
            Arch::Mips64le => "mips64le",
            Arch::S390x => "s390x",
            Arch::Riscv64 => "riscv64",
            Arch::Loong64 => "loong64",
        }
    }

    /// The architecture for a GOARCH name.
    pub fn from_go_name(name: &str) -> Option<Arch> {
        Arch::KNOWN.iter().copied().find(|a| a.go_name() == name)
    }

    /// The architecture of the running host, when it has a SIF code.
    pub fn host() -> Arch {
        match std::env::consts::ARCH {
            "x86" => Arch::I386,
            "x86_64" => Arch::Amd64,
            "arm" => Arch::Arm,
            "aarch64" => Arch::Arm64,
            "powerpc64" if cfg!(target_endian = "little") => Arch::Ppc64le,
            "powerpc64" => Arch::Ppc64,
            "mips" if cfg!(target_endian = "little") => Arch::Mipsle,
            "mips" => Arch::Mips,
            "mips64" if cfg!(target_endian = "little") => Arch::Mips64le,
            "mips64" => Arch::Mips64,
            "s390x" => Arch::S390x,
            "riscv64" => Arch::Riscv64,
            "loongarch64" => Arch::Loong64,
            _ => Arch::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_data_type_values_and_labels() {
        assert_eq!(DataType::Deffile.raw(), 0x4001);
        assert_eq!(DataType::OciBlob.raw(), 0x400B);
        for dt in DataType::ALL {
            assert_eq!(DataType::from_raw(dt.raw()), Some(dt));
            assert_eq!(
                DataType::from_siftool_number(i64::from(dt.siftool_number())),
                Some(dt)
            );
        }
        assert_eq!(DataType::from_raw(0x4000), None);
        assert_eq!(DataType::from_raw(0x400C), None);
        assert_eq!(DataType::from_raw(i32::MIN), None);
        assert_eq!(DataType::from_siftool_number(0), None);
        assert_eq!(DataType::from_siftool_number(12), None);
        assert_eq!(DataType::Partition.label(), "FS");
        assert_eq!(DataType::CryptoMessage.label(), "Cryptographic Message");
    }

    #[test]
    fn test_int_enums_round_trip_unknown_values() {
        assert_eq!(FsType::from_raw(6), FsType::GocryptfsSquashfs);
        assert_eq!(FsType::from_raw(9), FsType::Unknown(9));
        assert_eq!(FsType::Unknown(9).raw(), 9);
        assert_eq!(FsType::Unknown(9).label(), "Unknown");
        assert_eq!(PartType::PrimSys.label(), "*System");
        assert_eq!(HashType::from_raw(2).label(), "SHA-384");
        assert_eq!(MessageType::from_raw(0x200), MessageType::RsaOaep);
        assert_eq!(SbomFormat::Unknown(0).label(), "unknown");
        assert_eq!(
            SbomFormat::from_name("github"),
            Some(SbomFormat::GithubJson)
        );
        assert_eq!(
            SbomFormat::from_name("spdx-yaml"),
            Some(SbomFormat::SpdxYaml)
        );
        assert_eq!(SbomFormat::from_name("nope"), None);
    }

    #[test]
    fn test_arch_codes() {
        assert_eq!(Arch::I386.code(), *b"01\0");
        assert_eq!(Arch::Mips64le.code(), *b"10\0");
        assert_eq!(Arch::Loong64.code(), *b"13\0");
        assert_eq!(Arch::Unknown.code(), *b"00\0");
        for a in Arch::KNOWN {
            assert_eq!(Arch::from_code(&a.code()), a);
            assert_eq!(Arch::from_go_name(a.go_name()), Some(a));
            assert_eq!(Arch::from_number(i64::from(a.number())), Some(a));
        }
        assert_eq!(Arch::from_code(b"14\0"), Arch::Unknown);
        assert_eq!(Arch::from_code(b"01x"), Arch::Unknown);
        assert_eq!(Arch::from_code(b"\xff\xff\xff"), Arch::Unknown);
        assert_eq!(Arch::from_number(0), None);
        assert_eq!(Arch::from_number(14), None);
    }
}
