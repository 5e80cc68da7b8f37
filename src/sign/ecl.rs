//! Enforcing the execution control list (ecl.toml, admin guide §2.3) before a container is
//! mounted.
//!
//! The image belongs to the execgroup whose `dirpath` is exactly the directory holding the
//! opened image file (resolved through `/proc/self/fd`, so the directory checked is the one
//! of the file that will be served), else to the execgroup without a dirpath, else it is
//! refused. Its signatures are checked with the global keyring only, so a user's keyring
//! cannot widen what the site allows; then `whitelist` needs one listed key to have signed
//! every group, `whitestrict` all of them, `blacklist` none of them.
//!
//! sifr fails closed where Apptainer is lenient: every signature must verify with the
//! global keyring (Apptainer ignores signatures by keys it cannot check, which lets an
//! unverifiable signature sit next to a valid one), and an activated list refuses images
//! that are not SIF files, which carry no signatures (Apptainer applies the list to SIF
//! files only, so a sandbox directory or a bare squashfs bypassed it).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use std::sync::Arc;

use crate::config::ecl::{EclConfig, EclMode, ExecGroup};
use crate::config::{ConfigError, Source, SystemPaths};
use crate::image::ImageKind;
use crate::image::pinned::PinnedFile;
use crate::image::sif::SifImage;
use crate::image::source::{OpenedImage, SourceError, sif_root_of};

use super::keyring::{GlobalKeyring, KeyringError};
use super::pgp::{self, KeySource, Keyring};
use super::verify::{KeyMaterial, Selection, verify_tasks};

/// An image the execution control list refuses, or a list that cannot be applied. Displays
/// as one line naming the image, the list, the execgroup and the rule.
#[derive(Debug, thiserror::Error)]
#[error("{}: refused by the execution control list ({source_}): {reason}", image.display())]
pub struct EclError {
    pub image: PathBuf,
    pub source_: String,
    pub reason: String,
}

/// Why the list could not be applied to an image (or refused it).
#[derive(Debug, thiserror::Error)]
pub enum EnforceError {
    #[error(transparent)]
    Refused(#[from] EclError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Keyring(#[from] KeyringError),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("{path}: cannot {what} for the execution control list: {err}")]
    Io {
        path: PathBuf,
        what: &'static str,
        err: std::io::Error,
    },
}

/// Applies the execution control list (ecl.toml) to an opened image, before anything is
/// mounted: a SIF file is judged by the directory of the open file and by its signatures
/// checked with the global keyring; when the list is activated, other kinds of image are
/// refused. Every verb that starts a container from an image calls it (an `instance start`
/// verb must too).
///
/// When the list is activated, the SIF is reloaded through a [`PinnedFile`] before it is
/// checked, and the image returned serves only the bytes that verification read: its root
/// partition comes from the verified descriptors, and a file rewritten after the check fails
/// to read instead of running unsigned content.
pub fn enforce(paths: &SystemPaths, mut image: OpenedImage) -> Result<OpenedImage, EnforceError> {
    let ecl = EclConfig::load(paths)?;
    if !ecl.value.activated {
        return Ok(image);
    }
    let global = GlobalKeyring::new(paths.clone());
    let mut keyring = Keyring::new();
    for k in global.public_keys()? {
        keyring.add(k, KeySource::Global);
    }
    let enforcer = Enforcer {
        ecl: &ecl.value,
        source: &ecl.source,
        global: &keyring,
        global_path: &global.path(),
    };
    let io = |what| {
        let path = image.path.clone();
        move |err| EnforceError::Io { path, what, err }
    };
    match image.sif.take() {
        Some(img) => {
            let file = img
                .into_file()
                .ok_or_else(|| std::io::Error::other("image not opened"))
                .map_err(io("open the image"))?;
            let dir = directory_of(&file).map_err(io("find the directory of the opened image"))?;
            let pinned = Arc::new(PinnedFile::new(file).map_err(io("read the image"))?);
            let verified =
                SifImage::from_shared(pinned.clone(), &image.path).map_err(SourceError::from)?;
            enforcer.check_sif(&image.path, &verified, &dir)?;
            // The root as the verified descriptors place it, its header read while recording.
            image.root = sif_root_of(&verified, &image.path)?;
            pinned.freeze();
            image.pinned = Some(pinned);
        }
        None => {
            let kind = match image.kind {
                ImageKind::Sandbox => "sandbox directory",
                ImageKind::Squashfs => "squashfs",
                ImageKind::Ext => "ext2/3/4",
                ImageKind::Sif => "SIF",
            };
            enforcer.check_not_sif(&image.path, kind)?;
        }
    }
    Ok(image)
}

fn mode_name(m: EclMode) -> &'static str {
    match m {
        EclMode::Whitelist => "whitelist",
        EclMode::Whitestrict => "whitestrict",
        EclMode::Blacklist => "blacklist",
    }
}

fn describe(g: &ExecGroup) -> String {
    let dir = g
        .dirpath
        .as_ref()
        .map(|d| format!("dirpath \"{}\"", d.display()))
        .unwrap_or_else(|| "no dirpath".into());
    format!("execgroup \"{}\" ({}, {dir})", g.tagname, mode_name(g.mode))
}

fn key_list(fps: &[String]) -> String {
    if fps.is_empty() {
        "(none listed)".into()
    } else {
        fps.join(", ")
    }
}

/// The directory holding the open file `file`, as the kernel resolves it.
pub fn directory_of(file: &File) -> std::io::Result<PathBuf> {
    let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?;
    if link.to_string_lossy().ends_with(" (deleted)") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the image file was deleted",
        ));
    }
    Ok(link
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/")))
}

/// The ECL as it applies to one launch.
pub struct Enforcer<'a> {
    pub ecl: &'a EclConfig,
    /// Where the list came from (for messages).
    pub source: &'a Source,
    /// The global keyring, the only keys trusted.
    pub global: &'a Keyring,
    /// Where the global keyring is (for messages).
    pub global_path: &'a Path,
}

impl Enforcer<'_> {
    fn refuse(&self, image: &Path, reason: String) -> EclError {
        EclError {
            image: image.to_path_buf(),
            source_: self.source.to_string(),
            reason,
        }
    }

    /// Refuses an image that is not a SIF file when the list is active.
    pub fn check_not_sif(&self, image: &Path, kind: &str) -> Result<(), EclError> {
        if !self.ecl.activated {
            return Ok(());
        }
        Err(self.refuse(
            image,
            format!(
                "the list is activated and only SIF images, whose signatures can be checked, may run; this is a {kind} image"
            ),
        ))
    }

    /// Checks an opened SIF image whose file sits in `dir`.
    pub fn check_sif(&self, image: &Path, img: &SifImage, dir: &Path) -> Result<(), EclError> {
        if !self.ecl.activated {
            return Ok(());
        }
        for g in &self.ecl.execgroups {
            if let Some(d) = &g.dirpath
                && let Ok(real) = std::fs::canonicalize(d)
                && &real != d
            {
                return Err(self.refuse(
                    image,
                    format!(
                        "{} names a path with a symbolic link (it resolves to \"{}\"); the administrator must write the resolved path",
                        describe(g),
                        real.display()
                    ),
                ));
            }
        }
        let Some(group) = self.ecl.group_for(dir) else {
            return Err(self.refuse(
                image,
                format!(
                    "{} not part of any execgroup (no execgroup has dirpath \"{}\" and none has an empty dirpath)",
                    image.display(),
                    dir.display()
                ),
            ));
        };
        let sel = Selection {
            legacy: self.ecl.legacyinsecure,
            ..Selection::default()
        };
        let keys = KeyMaterial {
            pgp: Some(self.global),
            dsse: &[],
        };
        let (report, tasks) = verify_tasks(img, &keys, &sel);
        if let Err(e) = report.outcome {
            return Err(self.refuse(
                image,
                format!(
                    "{} requires signatures that verify with the global keyring {}: integrity: {e}",
                    describe(group),
                    self.global_path.display()
                ),
            ));
        }
        let all: Vec<String> = report
            .signed_by_all(&tasks)
            .iter()
            .map(|f| pgp::fingerprint_hex(f))
            .collect();
        let any: Vec<String> = report
            .results
            .iter()
            .filter_map(|r| r.signer.as_ref())
            .map(|s| pgp::fingerprint_hex(&s.fingerprint))
            .collect();
        let listed: Vec<String> = group.keyfp.iter().map(|k| k.as_str().to_string()).collect();
        let signers = |v: &[String]| {
            let mut v = v.to_vec();
            v.sort();
            v.dedup();
            if v.is_empty() {
                "no key".to_string()
            } else {
                v.join(", ")
            }
        };
        match group.mode {
            EclMode::Whitelist => {
                if listed.iter().any(|k| all.contains(k)) {
                    return Ok(());
                }
                Err(self.refuse(
                    image,
                    format!(
                        "{} requires a signature by one of {} on every group, but the image is signed by {}",
                        describe(group),
                        key_list(&listed),
                        signers(&all)
                    ),
                ))
            }
            EclMode::Whitestrict => {
                let missing: Vec<String> = listed
                    .iter()
                    .filter(|k| !all.contains(k))
                    .cloned()
                    .collect();
                if missing.is_empty() {
                    return Ok(());
                }
                Err(self.refuse(
                    image,
                    format!(
                        "{} requires signatures by all of {} on every group; missing: {}",
                        describe(group),
                        key_list(&listed),
                        missing.join(", ")
                    ),
                ))
            }
            EclMode::Blacklist => match listed.iter().find(|k| any.contains(k)) {
                None => Ok(()),
                Some(k) => Err(self.refuse(
                    image,
                    format!(
                        "{} forbids signatures by {}, and the image is signed by {k}",
                        describe(group),
                        key_list(&listed)
                    ),
                )),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sif::When;
    use crate::sign::pgp::tests::{PGP_A, PGP_S, read_fixture};
    use crate::sign::pgp::{KeySource, NewKeyType, generate_key, parse_keys, public_of};
    use crate::sign::signer::{SignSelection, SigningKey, sign};
    use ::pgp::composed::SignedSecretKey;
    use ::pgp::types::Password;

    fn ecl(text: &str) -> EclConfig {
        EclConfig::parse(text, &Source::BuiltIn("ecl.toml")).expect("valid ecl")
    }

    fn global(keys: &[&str]) -> Option<Keyring> {
        let mut kr = Keyring::new();
        for rel in keys {
            for k in parse_keys(&read_fixture(rel)?).ok()? {
                kr.add(public_of(&k), KeySource::Global);
            }
        }
        Some(kr)
    }

    fn check(ecl_text: &str, kr: &Keyring, img: &SifImage, dir: &str) -> Result<(), EclError> {
        let cfg = ecl(ecl_text);
        let src = Source::BuiltIn("ecl.toml");
        let e = Enforcer {
            ecl: &cfg,
            source: &src,
            global: kr,
            global_path: Path::new("/etc/sifr/global-pgp-public"),
        };
        e.check_sif(Path::new("/img.sif"), img, Path::new(dir))
    }

    fn signed_image() -> Option<SifImage> {
        SifImage::from_bytes(read_fixture("two-groups-signed-pgp.sif")?, "t.sif").ok()
    }

    fn group(mode: &str, dir: &str, keys: &[&str]) -> String {
        let keys: Vec<String> = keys.iter().map(|k| format!("\"{k}\"")).collect();
        format!(
            "activated = true\n[[execgroup]]\ntagname = \"g\"\nmode = \"{mode}\"\ndirpath = \"{dir}\"\nkeyfp = [{}]\n",
            keys.join(", ")
        )
    }

    #[test]
    fn test_inactive_list_allows_everything() {
        let cfg = ecl("activated = false\n");
        let src = Source::BuiltIn("ecl.toml");
        let kr = Keyring::new();
        let e = Enforcer {
            ecl: &cfg,
            source: &src,
            global: &kr,
            global_path: Path::new("/g"),
        };
        e.check_not_sif(Path::new("/d"), "dir").expect("inactive");
        let Some(img) = signed_image() else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        e.check_sif(Path::new("/x.sif"), &img, Path::new("/x"))
            .expect("inactive");
    }

    #[test]
    fn test_modes() {
        let (Some(img), Some(kr)) = (signed_image(), global(&["keys/private.asc"])) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        check(&group("whitelist", "/ok", &[PGP_S]), &kr, &img, "/ok").expect("whitelisted");
        check(
            &group("whitelist", "/ok", &[PGP_A, PGP_S]),
            &kr,
            &img,
            "/ok",
        )
        .expect("one of");
        let err = check(&group("whitelist", "/ok", &[PGP_A]), &kr, &img, "/ok")
            .expect_err("other key")
            .to_string();
        assert!(
            err.contains("execgroup \"g\" (whitelist, dirpath \"/ok\")")
                && err.contains(PGP_A)
                && err.contains(&format!("signed by {PGP_S}")),
            "{err}"
        );
        let err = check(
            &group("whitestrict", "/ok", &[PGP_S, PGP_A]),
            &kr,
            &img,
            "/ok",
        )
        .expect_err("strict")
        .to_string();
        assert!(err.contains(&format!("missing: {PGP_A}")), "{err}");
        check(&group("whitestrict", "/ok", &[PGP_S]), &kr, &img, "/ok").expect("strict ok");
        let err = check(&group("blacklist", "/ok", &[PGP_S]), &kr, &img, "/ok")
            .expect_err("forbidden")
            .to_string();
        assert!(err.contains("forbids"), "{err}");
        check(&group("blacklist", "/ok", &[PGP_A]), &kr, &img, "/ok").expect("not forbidden");
        // Elsewhere: no group.
        let err = check(
            &group("whitelist", "/ok", &[PGP_S]),
            &kr,
            &img,
            "/elsewhere",
        )
        .expect_err("no group")
        .to_string();
        assert!(err.contains("not part of any execgroup"), "{err}");
        // A group without dirpath catches the rest.
        let text = format!(
            "{}[[execgroup]]\ntagname = \"rest\"\nmode = \"blacklist\"\ndirpath = \"\"\nkeyfp = []\n",
            group("whitelist", "/ok", &[PGP_A])
        );
        check(&text, &kr, &img, "/elsewhere").expect("fallback group");
    }

    #[test]
    fn test_unsigned_unknown_or_tampered_fail_closed() {
        let (Some(signed), Some(kr)) = (signed_image(), global(&["keys/private.asc"])) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let rule = group("blacklist", "/ok", &[]);
        check(&rule, &kr, &signed, "/ok").expect("valid, nothing forbidden");
        // Unsigned: even a blacklist with no keys refuses it.
        let unsigned =
            SifImage::from_bytes(read_fixture("two-groups.sif").expect("fixture"), "u.sif")
                .expect("load");
        let err = check(&rule, &kr, &unsigned, "/ok")
            .expect_err("unsigned")
            .to_string();
        assert!(
            err.contains("signature not found for object group 1"),
            "{err}"
        );
        // Signed by a key that is not in the global keyring (the user's keyring does not count).
        let err = check(&rule, &Keyring::new(), &signed, "/ok")
            .expect_err("unknown")
            .to_string();
        assert!(err.contains("unknown entity"), "{err}");
        // Tampered after signing.
        let mut bytes = read_fixture("two-groups-signed-pgp.sif").expect("fixture");
        let d = signed.object(3).expect("3").range().start;
        bytes[usize::try_from(d).expect("offset") + 10] ^= 1;
        let tampered = SifImage::from_bytes(bytes, "t.sif").expect("load");
        let err = check(&rule, &kr, &tampered, "/ok")
            .expect_err("tampered")
            .to_string();
        assert!(
            err.contains("data object integrity compromised: 3"),
            "{err}"
        );
    }

    #[test]
    fn test_whitestrict_with_two_keys_and_extra_unverifiable_signature() {
        let Some(base) = read_fixture("one-group.sif") else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let k1 = generate_key("One <1@x>", NewKeyType::Ed25519, "").expect("k1");
        let k2 = generate_key("Two <2@x>", NewKeyType::Ed25519, "").expect("k2");
        let k3 = generate_key("Three <3@x>", NewKeyType::Ed25519, "").expect("k3");
        let fp = |k: &SignedSecretKey| {
            pgp::fingerprint_hex(&pgp::fingerprint_of(&k.primary_key).expect("v4"))
        };
        let sign_with = |img: &mut SifImage, k: &SignedSecretKey| {
            sign(
                img,
                &SigningKey::Pgp {
                    key: k,
                    password: Password::empty(),
                },
                &SignSelection::default(),
                When::Now,
            )
            .expect("sign");
        };
        let mut img = SifImage::from_bytes(base.clone(), "t.sif").expect("load");
        sign_with(&mut img, &k1);
        sign_with(&mut img, &k2);
        let mut kr = Keyring::new();
        kr.add(k1.to_public_key(), KeySource::Global);
        kr.add(k2.to_public_key(), KeySource::Global);
        let both = [fp(&k1), fp(&k2)];
        let both: Vec<&str> = both.iter().map(String::as_str).collect();
        check(&group("whitestrict", "/ok", &both), &kr, &img, "/ok").expect("both signed");
        // Only one of the two signed.
        let mut one = SifImage::from_bytes(base, "t.sif").expect("load");
        sign_with(&mut one, &k1);
        let err = check(&group("whitestrict", "/ok", &both), &kr, &one, "/ok")
            .expect_err("one missing")
            .to_string();
        assert!(err.contains(&format!("missing: {}", fp(&k2))), "{err}");
        // A third signature by a key outside the global keyring: refused (fail closed).
        sign_with(&mut img, &k3);
        let err = check(&group("whitestrict", "/ok", &both), &kr, &img, "/ok")
            .expect_err("unverifiable signature")
            .to_string();
        assert!(err.contains("unknown entity"), "{err}");
    }

    #[test]
    fn test_legacy_mode_and_dirpath_symlink() {
        let (Some(bytes), Some(kr)) = (
            read_fixture("one-group-signed-legacy.sif"),
            global(&["keys/private.asc"]),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let img = SifImage::from_bytes(bytes, "l.sif").expect("load");
        let rule = group("whitelist", "/ok", &[PGP_S]);
        assert!(
            check(&rule, &kr, &img, "/ok").is_err(),
            "legacy needs legacyinsecure"
        );
        let legacy = rule.replace(
            "activated = true\n",
            "activated = true\nlegacyinsecure = true\n",
        );
        check(&legacy, &kr, &img, "/ok").expect("legacy accepted");

        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let text = group("whitelist", &link.to_string_lossy(), &[PGP_S]);
        let err = check(&text, &kr, &img, "/ok")
            .expect_err("symlink")
            .to_string();
        assert!(err.contains("symbolic link"), "{err}");
    }

    #[test]
    fn test_directory_of_open_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("x.sif");
        std::fs::write(&p, b"x").expect("write");
        let f = File::open(&p).expect("open");
        let real = std::fs::canonicalize(dir.path()).expect("canonical");
        assert_eq!(directory_of(&f).expect("dir"), real);
        // Moved after opening: the directory follows the file.
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).expect("mkdir");
        std::fs::rename(&p, sub.join("x.sif")).expect("rename");
        assert_eq!(directory_of(&f).expect("dir"), real.join("sub"));
        std::fs::remove_file(sub.join("x.sif")).expect("rm");
        assert!(directory_of(&f).is_err());
    }
}
