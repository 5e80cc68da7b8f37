//! Verifying the signatures of a SIF image (spec §9.5, §10): which tasks to run (groups,
//! objects, the legacy modes), which signature objects belong to each, and checking each one
//! (PGP clear-sign or DSSE, then the signed metadata or the legacy SIFHASH against the image).
//!
//! Like the reference, verification stops at the first signature that fails; every
//! signature checked until then is reported, with the objects it verified.

use crate::image::sif::{DataType, Descriptor, HashType, Link, PartType, SifImage};

use super::digest::HashAlg;
use super::dsse;
use super::error::IntegrityError;
use super::metadata::{ImageMetadata, group_min_id};
use super::pem::PublicKey;
use super::pgp::{self, Keyring, PgpSigner};

/// Largest signature object read.
pub const MAX_SIGNATURE_BYTES: u64 = 1024 * 1024;

/// The keys signatures may be checked with.
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyMaterial<'a> {
    /// PGP public keys (for clear-signed signatures).
    pub pgp: Option<&'a Keyring>,
    /// PEM public keys (for DSSE signatures).
    pub dsse: &'a [PublicKey],
}

/// What to verify (the `verify` flags).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Verify these groups (`--group-id`).
    pub groups: Vec<u32>,
    /// Verify these objects (`--sif-id`); only the object is checked, not its whole group.
    pub objects: Vec<u32>,
    /// Legacy mode: one task per grouped non-signature object (`--all`).
    pub all: bool,
    /// Check only legacy (pre-3.6) signatures (`--legacy-insecure`).
    pub legacy: bool,
}

/// The outcome of checking one signature object.
#[derive(Debug, Clone)]
pub struct SignatureResult {
    /// The signature object's ID.
    pub signature: u32,
    /// Who made it, for PGP signatures that verified cryptographically.
    pub signer: Option<PgpSigner>,
    /// The DSSE key IDs whose keys verified it.
    pub dsse_keys: Vec<String>,
    /// The objects it verified, in the order checked.
    pub verified: Vec<Descriptor>,
    /// Why it failed, if it did.
    pub error: Option<IntegrityError>,
}

/// Everything a verification did.
#[derive(Debug, Clone)]
pub struct Report {
    /// One entry per signature checked, in order.
    pub results: Vec<SignatureResult>,
    /// Success, or the first failure (also recorded in its result when it concerns one
    /// signature).
    pub outcome: Result<(), IntegrityError>,
}

impl Report {
    fn failed(results: Vec<SignatureResult>, e: IntegrityError) -> Report {
        Report {
            results,
            outcome: Err(e),
        }
    }

    /// The fingerprints of the PGP signers whose signatures verified, per task, as the
    /// reference's `AllSignedBy` reads them (every task signed by the key).
    pub fn signed_by_all(&self, tasks: &[Vec<u32>]) -> Vec<[u8; pgp::FINGERPRINT_LEN]> {
        let mut out: Vec<[u8; pgp::FINGERPRINT_LEN]> = Vec::new();
        for (i, sigs) in tasks.iter().enumerate() {
            let fps: Vec<_> = self
                .results
                .iter()
                .filter(|r| r.error.is_none() && sigs.contains(&r.signature))
                .filter_map(|r| r.signer.as_ref().map(|s| s.fingerprint))
                .collect();
            if i == 0 {
                out = fps;
                out.sort_unstable();
                out.dedup();
            } else {
                out.retain(|f| fps.contains(f));
            }
        }
        out
    }
}

/// One verification task.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Task {
    /// Current signatures linked to the group; `subset`: only these objects are checked.
    Group { group: u32, subset: Option<u32> },
    /// Legacy signatures linked to the group, over the group's data.
    LegacyGroup(u32),
    /// Legacy signatures linked to the object.
    LegacyObject(u32),
}

/// Verifies `img`'s signatures selected by `sel` with `keys`.
pub fn verify(img: &SifImage, keys: &KeyMaterial<'_>, sel: &Selection) -> Report {
    let tasks = match tasks(img, sel) {
        Ok(t) => t,
        Err(e) => return Report::failed(Vec::new(), e),
    };
    run(img, keys, &tasks).0
}

/// Verifies and also returns the signature object IDs each task checked (for the ECL).
pub fn verify_tasks(
    img: &SifImage,
    keys: &KeyMaterial<'_>,
    sel: &Selection,
) -> (Report, Vec<Vec<u32>>) {
    match tasks(img, sel) {
        Ok(t) => run(img, keys, &t),
        Err(e) => (Report::failed(Vec::new(), e), Vec::new()),
    }
}

/// Builds the tasks the way Apptainer and the reference library do.
fn tasks(img: &SifImage, sel: &Selection) -> Result<Vec<Task>, IntegrityError> {
    let mut groups = sel.groups.clone();
    let mut objects = sel.objects.clone();
    if groups.contains(&0) {
        return Err(IntegrityError::GroupNotFound(0));
    }
    if objects.contains(&0) {
        return Err(IntegrityError::ObjectNotFound(0));
    }
    if sel.legacy && !sel.all && groups.is_empty() && objects.is_empty() {
        // Legacy signatures signed the primary system partition by default.
        let prim = img
            .objects()
            .find(|d| d.is_partition_of_type(PartType::PrimSys))
            .ok_or(IntegrityError::NoPrimaryPartition)?;
        objects.push(prim.id);
    }
    if sel.legacy && sel.all {
        objects.extend(
            img.objects()
                .filter(|d| d.data_type != DataType::Signature && d.group().is_some())
                .map(|d| d.id),
        );
    }
    groups.sort_unstable();
    groups.dedup();
    objects.sort_unstable();
    objects.dedup();
    if groups.is_empty() && objects.is_empty() {
        groups = img.group_ids();
        if groups.is_empty() {
            return Err(IntegrityError::NoGroups);
        }
    }
    let mut out = Vec::new();
    for g in groups {
        if group_min_id(img, g).is_none() {
            return Err(IntegrityError::GroupNotFound(g));
        }
        out.push(if sel.legacy {
            Task::LegacyGroup(g)
        } else {
            Task::Group {
                group: g,
                subset: None,
            }
        });
    }
    for id in objects {
        let d = img
            .objects()
            .find(|d| d.id == id)
            .ok_or(IntegrityError::ObjectNotFound(id))?;
        if sel.legacy {
            out.push(Task::LegacyObject(id));
        } else {
            let group = d.group().ok_or(IntegrityError::GroupNotFound(0))?;
            out.push(Task::Group {
                group,
                subset: Some(id),
            });
        }
    }
    Ok(out)
}

/// The objects of `group` in descriptor-table order (the reference's `GetDescriptors`).
/// The signing-key fingerprints that the image's signature descriptors name, once each.
pub fn signer_fingerprints(img: &SifImage) -> Vec<[u8; pgp::FINGERPRINT_LEN]> {
    let mut out = Vec::new();
    for d in img.objects_of_type(DataType::Signature) {
        if let Some(fp) = d.signature().and_then(|m| m.fingerprint)
            && !out.contains(&fp)
        {
            out.push(fp);
        }
    }
    out
}

fn group_objects(img: &SifImage, group: u32) -> Vec<&Descriptor> {
    img.objects().filter(|d| d.group() == Some(group)).collect()
}

/// A signature object's bytes, bounded.
fn signature_data(img: &SifImage, d: &Descriptor) -> Result<Vec<u8>, IntegrityError> {
    let size = d.range().end - d.range().start;
    if size > MAX_SIGNATURE_BYTES {
        return Err(IntegrityError::SignatureTooLarge {
            id: d.id,
            size,
            limit: MAX_SIGNATURE_BYTES,
        });
    }
    img.read_object(d, MAX_SIGNATURE_BYTES)
        .map_err(|e| IntegrityError::Read(e.to_string()))
}

/// True for a legacy signature: a clear-signed `SIFHASH:\n` text.
fn is_legacy(data: &[u8]) -> bool {
    pgp::decode_clearsign(data).is_some_and(|c| c.plaintext.starts_with("SIFHASH:\n"))
}

/// The signature objects a task checks.
fn task_signatures<'a>(
    img: &'a SifImage,
    task: &Task,
) -> Result<Vec<&'a Descriptor>, IntegrityError> {
    let sigs = img.objects_of_type(DataType::Signature);
    let found: Vec<&Descriptor> = match *task {
        Task::Group { group, .. } | Task::LegacyGroup(group) => {
            let want_legacy = matches!(task, Task::LegacyGroup(_));
            let mut v = Vec::new();
            for d in sigs.filter(|d| d.link() == Link::Group(group)) {
                if is_legacy(&signature_data(img, d)?) == want_legacy {
                    v.push(d);
                }
            }
            v
        }
        Task::LegacyObject(id) => sigs.filter(|d| d.link() == Link::Object(id)).collect(),
    };
    if found.is_empty() {
        return Err(match *task {
            Task::Group { group, .. } | Task::LegacyGroup(group) => {
                IntegrityError::SignatureNotFoundForGroup(group)
            }
            Task::LegacyObject(id) => IntegrityError::SignatureNotFoundForObject(id),
        });
    }
    Ok(found)
}

fn run(img: &SifImage, keys: &KeyMaterial<'_>, tasks: &[Task]) -> (Report, Vec<Vec<u32>>) {
    let mut results = Vec::new();
    let mut per_task = Vec::new();
    if keys.pgp.is_none() && keys.dsse.is_empty() {
        return (
            Report::failed(results, IntegrityError::NoKeyMaterial),
            per_task,
        );
    }
    // Every non-signature object must belong to a group, or it would escape signing.
    if let Some(d) = img
        .ungrouped_objects()
        .into_iter()
        .find(|d| d.data_type != DataType::Signature)
    {
        let e = IntegrityError::NonGroupedObject {
            id: d.id,
            kind: d.data_type.label(),
        };
        return (Report::failed(results, e), per_task);
    }
    for task in tasks {
        let sigs = match task_signatures(img, task) {
            Ok(s) => s,
            Err(e) => return (Report::failed(results, e), per_task),
        };
        per_task.push(sigs.iter().map(|d| d.id).collect());
        for sig in sigs {
            let r = check_signature(img, keys, task, sig);
            let failed = r.error.clone();
            results.push(r);
            if let Some(e) = failed {
                return (Report::failed(results, e), per_task);
            }
        }
    }
    (
        Report {
            results,
            outcome: Ok(()),
        },
        per_task,
    )
}

/// What a signature's cryptography yielded.
struct Opened {
    plaintext: Vec<u8>,
    signer: Option<PgpSigner>,
    dsse_keys: Vec<String>,
}

/// Checks the signature itself (PGP or DSSE) and returns the signed text.
fn open_signature(
    keys: &KeyMaterial<'_>,
    sig: &Descriptor,
    data: &[u8],
    legacy: bool,
) -> Result<Opened, IntegrityError> {
    let invalid = |cause: String| IntegrityError::SignatureNotValid { id: sig.id, cause };
    if !legacy && let Some(env) = dsse::decode(data) {
        if keys.dsse.is_empty() {
            return Err(invalid(
                "it is a DSSE signature and no PEM key was given; verify with --key PUBLIC.pem or --certificate"
                    .into(),
            ));
        }
        let (payload, accepted) = dsse::verify(&env, keys.dsse).map_err(invalid)?;
        return Ok(Opened {
            plaintext: payload,
            signer: None,
            dsse_keys: accepted.iter().map(|k| k.key_id()).collect(),
        });
    }
    let Some(ct) = pgp::decode_clearsign(data) else {
        return Err(invalid("signature format not recognized".into()));
    };
    let Some(kr) = keys.pgp else {
        return Err(invalid(
            "it is a PGP signature and only PEM keys were given; verify without --key to use the PGP keyrings"
                .into(),
        ));
    };
    let signer = kr.verify(&ct).map_err(invalid)?;
    // The signing entity must be the one the descriptor names.
    let stored = sig.signature().and_then(|m| m.fingerprint);
    if stored != Some(signer.fingerprint) {
        return Err(IntegrityError::FingerprintMismatch {
            id: sig.id,
            descriptor: stored
                .map(|f| pgp::fingerprint_hex(&f))
                .unwrap_or_else(|| "none".into()),
            signer: pgp::fingerprint_hex(&signer.fingerprint),
        });
    }
    Ok(Opened {
        plaintext: ct.plaintext.into_bytes(),
        signer: Some(signer),
        dsse_keys: Vec::new(),
    })
}

fn check_signature(
    img: &SifImage,
    keys: &KeyMaterial<'_>,
    task: &Task,
    sig: &Descriptor,
) -> SignatureResult {
    let mut r = SignatureResult {
        signature: sig.id,
        signer: None,
        dsse_keys: Vec::new(),
        verified: Vec::new(),
        error: None,
    };
    let legacy = !matches!(task, Task::Group { .. });
    let opened = signature_data(img, sig).and_then(|d| open_signature(keys, sig, &d, legacy));
    let opened = match opened {
        Ok(o) => o,
        Err(e) => {
            r.error = Some(e);
            return r;
        }
    };
    r.signer = opened.signer;
    r.dsse_keys = opened.dsse_keys;
    let outcome = match *task {
        Task::Group { group, subset } => check_metadata(
            img,
            sig.id,
            group,
            subset,
            &opened.plaintext,
            &mut r.verified,
        ),
        Task::LegacyGroup(group) => {
            let objs = group_objects(img, group);
            check_legacy(img, sig, &objs, &opened.plaintext).map(|()| {
                r.verified = objs.into_iter().cloned().collect();
            })
        }
        Task::LegacyObject(id) => match img.objects().find(|d| d.id == id) {
            Some(d) => check_legacy(img, sig, &[d], &opened.plaintext).map(|()| {
                r.verified = vec![d.clone()];
            }),
            None => Err(IntegrityError::ObjectNotFound(id)),
        },
    };
    r.error = outcome.err();
    r
}

/// Current format: decode the metadata and check it against the group.
fn check_metadata(
    img: &SifImage,
    sig_id: u32,
    group: u32,
    subset: Option<u32>,
    plaintext: &[u8],
    verified: &mut Vec<Descriptor>,
) -> Result<(), IntegrityError> {
    let md = ImageMetadata::from_json(plaintext)
        .map_err(|cause| IntegrityError::SignatureNotValid { id: sig_id, cause })?;
    let min = group_min_id(img, group).ok_or(IntegrityError::GroupNotFound(group))?;
    let all = group_objects(img, group);
    let checked: Vec<&Descriptor> = match subset {
        Some(id) => all.iter().copied().filter(|d| d.id == id).collect(),
        None => {
            md.ids_match(min, &all)?;
            all
        }
    };
    let (ok, res) = md.check(img, min, &checked);
    *verified = ok.into_iter().cloned().collect();
    res
}

/// Legacy format: `SIFHASH:\n<hex>` of the objects' data, concatenated.
fn check_legacy(
    img: &SifImage,
    sig: &Descriptor,
    objects: &[&Descriptor],
    plaintext: &[u8],
) -> Result<(), IntegrityError> {
    let invalid = |cause: String| IntegrityError::SignatureNotValid { id: sig.id, cause };
    let alg = match sig.signature().map(|m| m.hash_type) {
        Some(HashType::Sha256) => HashAlg::Sha256,
        Some(HashType::Sha384) => HashAlg::Sha384,
        Some(HashType::Sha512) => HashAlg::Sha512,
        other => {
            return Err(invalid(format!(
                "hash algorithm {} unsupported for legacy signatures",
                other.map(|h| h.label()).unwrap_or("none")
            )));
        }
    };
    let text = plaintext.strip_prefix(b"SIFHASH:\n").unwrap_or(plaintext);
    let text = text.strip_suffix(b"\n").unwrap_or(text);
    let want = hex::decode(text).map_err(|e| IntegrityError::DigestMalformed {
        text: String::from_utf8_lossy(text).chars().take(80).collect(),
        why: e.to_string(),
    })?;
    if want.len() != alg.digest_len() {
        return Err(IntegrityError::DigestMalformed {
            text: String::from_utf8_lossy(text).chars().take(80).collect(),
            why: "wrong length for the algorithm".into(),
        });
    }
    let mut h = alg.hasher();
    let mut buf = vec![0u8; 1 << 16];
    for d in objects {
        let mut pos = 0u64;
        loop {
            let n = img
                .read_object_at(d, pos, &mut buf)
                .map_err(|e| IntegrityError::Read(e.to_string()))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            pos += n as u64;
        }
    }
    if h.finish() == want {
        Ok(())
    } else if let [d] = objects {
        Err(IntegrityError::ObjectIntegrity(d.id))
    } else {
        Err(IntegrityError::GroupDataIntegrity(
            objects
                .iter()
                .map(|d| d.id.to_string())
                .collect::<Vec<_>>()
                .join(", "),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::sign::pgp::tests::{PGP_A, PGP_S, read_fixture, testdata};
    use crate::sign::pgp::{KeySource, parse_keys, public_of};

    pub(crate) fn keyring(rel: &str) -> Option<Keyring> {
        let mut kr = Keyring::new();
        for k in parse_keys(&read_fixture(rel)?).ok()? {
            kr.add(public_of(&k), KeySource::Local);
        }
        Some(kr)
    }

    pub(crate) fn open(rel: &str) -> Option<SifImage> {
        SifImage::open(testdata().join("sif").join(rel)).ok()
    }

    fn pem(name: &str) -> Option<PublicKey> {
        PublicKey::from_pem(&read_fixture(&format!("keys/{name}-public.pem"))?).ok()
    }

    fn fp(r: &SignatureResult) -> String {
        r.signer
            .as_ref()
            .map(|s| pgp::fingerprint_hex(&s.fingerprint))
            .unwrap_or_default()
    }

    fn ids(r: &SignatureResult) -> Vec<u32> {
        r.verified.iter().map(|d| d.id).collect()
    }

    #[test]
    fn test_every_pgp_fixture_verifies_with_its_key_and_not_another() {
        let (Some(s), Some(a)) = (
            keyring("keys/private.asc"),
            keyring("apptainer/keys/pgp-public.asc"),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let default = Selection::default();
        let legacy = Selection {
            legacy: true,
            ..Selection::default()
        };
        let legacy_group = Selection {
            legacy: true,
            groups: vec![1],
            ..Selection::default()
        };
        let legacy_all = Selection {
            legacy: true,
            all: true,
            ..Selection::default()
        };
        // (image, selection, signer keyring, fingerprint, signatures checked)
        let cases: Vec<(&str, &Selection, &Keyring, &str, usize)> = vec![
            ("one-group-signed-pgp.sif", &default, &s, PGP_S, 1),
            ("two-groups-signed-pgp.sif", &default, &s, PGP_S, 2),
            ("one-group-signed-legacy.sif", &legacy, &s, PGP_S, 1),
            (
                "one-group-signed-legacy-group.sif",
                &legacy_group,
                &s,
                PGP_S,
                1,
            ),
            ("one-group-signed-legacy-all.sif", &legacy_all, &s, PGP_S, 2),
            ("two-groups-signed-legacy.sif", &legacy, &s, PGP_S, 1),
            (
                "two-groups-signed-legacy-group.sif",
                &legacy_group,
                &s,
                PGP_S,
                1,
            ),
            ("apptainer/one-group-signed-pgp.sif", &default, &a, PGP_A, 1),
            (
                "apptainer/one-group-signed-legacy.sif",
                &legacy,
                &a,
                PGP_A,
                1,
            ),
            (
                "apptainer/one-group-signed-legacy-group.sif",
                &legacy_group,
                &a,
                PGP_A,
                1,
            ),
            (
                "apptainer/one-group-signed-legacy-all.sif",
                &legacy_all,
                &a,
                PGP_A,
                2,
            ),
        ];
        for (image, sel, kr, want_fp, n) in cases {
            let img = open(image).expect(image);
            let keys = KeyMaterial {
                pgp: Some(kr),
                dsse: &[],
            };
            let report = verify(&img, &keys, sel);
            assert!(report.outcome.is_ok(), "{image}: {:?}", report.outcome);
            assert_eq!(report.results.len(), n, "{image}");
            for r in &report.results {
                assert_eq!(fp(r), want_fp, "{image}");
                assert!(!r.verified.is_empty(), "{image}");
            }
            // The other key: an unknown signer, naming the signature object.
            let wrong = if std::ptr::eq(kr, &s) { &a } else { &s };
            let keys = KeyMaterial {
                pgp: Some(wrong),
                dsse: &[],
            };
            let report = verify(&img, &keys, sel);
            let err = report.outcome.expect_err(image).to_string();
            assert!(
                err.starts_with("signature object ") && err.contains("unknown entity"),
                "{image}: {err}"
            );
        }
    }

    #[test]
    fn test_default_mode_ignores_legacy_signatures() {
        let (Some(s), Some(img)) = (
            keyring("keys/private.asc"),
            open("one-group-signed-legacy-group.sif"),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let keys = KeyMaterial {
            pgp: Some(&s),
            dsse: &[],
        };
        let report = verify(&img, &keys, &Selection::default());
        assert_eq!(
            report.outcome,
            Err(IntegrityError::SignatureNotFoundForGroup(1))
        );
        // Legacy per-object signatures live in the group: the default check sees a
        // non-legacy-free group too.
        let img = open("two-groups-signed-legacy-all.sif").expect("fixture");
        let sel = Selection {
            legacy: true,
            all: true,
            ..Selection::default()
        };
        let report = verify(&img, &keys, &sel);
        assert_eq!(
            report.outcome,
            Err(IntegrityError::SignatureNotFoundForObject(3))
        );
        assert_eq!(report.results.len(), 2, "objects 1 and 2 verified first");
    }

    #[test]
    fn test_dsse_fixtures() {
        let (Some(ed), Some(rsa), Some(ec)) = (pem("ed25519"), pem("rsa"), pem("ecdsa")) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        for image in [
            "one-group-signed-dsse.sif",
            "two-groups-signed-dsse.sif",
            "apptainer/one-group-signed-dsse.sif",
        ] {
            let img = open(image).expect(image);
            for good in [&ed, &rsa] {
                let report = verify(
                    &img,
                    &KeyMaterial {
                        pgp: None,
                        dsse: std::slice::from_ref(good),
                    },
                    &Selection::default(),
                );
                assert!(report.outcome.is_ok(), "{image}: {:?}", report.outcome);
                assert_eq!(report.results[0].dsse_keys, [good.key_id()]);
                assert!(report.results[0].signer.is_none());
            }
            let report = verify(
                &img,
                &KeyMaterial {
                    pgp: None,
                    dsse: std::slice::from_ref(&ec),
                },
                &Selection::default(),
            );
            let err = report.outcome.expect_err(image).to_string();
            assert!(err.contains("Found: 0, Expected 1"), "{err}");
            // PGP keys only: a clear message saying what is needed.
            let kr = Keyring::new();
            let report = verify(
                &img,
                &KeyMaterial {
                    pgp: Some(&kr),
                    dsse: &[],
                },
                &Selection::default(),
            );
            let err = report.outcome.expect_err(image).to_string();
            assert!(
                err.contains("DSSE signature") && err.contains("--key"),
                "{err}"
            );
        }
    }

    #[test]
    fn test_selections() {
        let (Some(s), Some(img)) = (
            keyring("keys/private.asc"),
            open("two-groups-signed-pgp.sif"),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let keys = KeyMaterial {
            pgp: Some(&s),
            dsse: &[],
        };
        let sel = |groups: Vec<u32>, objects: Vec<u32>| Selection {
            groups,
            objects,
            ..Selection::default()
        };
        let r = verify(&img, &keys, &sel(vec![2], vec![]));
        assert!(r.outcome.is_ok());
        assert_eq!(r.results.len(), 1);
        assert_eq!(ids(&r.results[0]), [3]);
        let r = verify(&img, &keys, &sel(vec![], vec![2]));
        assert!(r.outcome.is_ok());
        assert_eq!(ids(&r.results[0]), [2]);
        let r = verify(&img, &keys, &sel(vec![9], vec![]));
        assert_eq!(r.outcome, Err(IntegrityError::GroupNotFound(9)));
        let r = verify(&img, &keys, &sel(vec![], vec![99]));
        assert_eq!(r.outcome, Err(IntegrityError::ObjectNotFound(99)));
        let r = verify(&img, &keys, &sel(vec![0], vec![]));
        assert!(r.outcome.is_err());
        // The signature objects are in no group.
        let r = verify(&img, &keys, &sel(vec![], vec![4]));
        assert!(r.outcome.is_err());
        let r = verify(&img, &KeyMaterial::default(), &Selection::default());
        assert_eq!(r.outcome, Err(IntegrityError::NoKeyMaterial));
        let empty = open("empty.sif").expect("fixture");
        let r = verify(&empty, &keys, &Selection::default());
        assert_eq!(r.outcome, Err(IntegrityError::NoGroups));
        let r = verify(
            &open("one-group.sif").expect("fixture"),
            &keys,
            &Selection::default(),
        );
        assert_eq!(r.outcome, Err(IntegrityError::SignatureNotFoundForGroup(1)));
        let r = verify(
            &empty,
            &keys,
            &Selection {
                legacy: true,
                ..Selection::default()
            },
        );
        assert_eq!(r.outcome, Err(IntegrityError::NoPrimaryPartition));
    }

    /// Flips one byte of a copy of `image` and verifies it with PGP-S.
    fn tampered(image: &str, at: impl Fn(&SifImage) -> u64) -> Option<Report> {
        tampered_with(image, &Selection::default(), at)
    }

    fn tampered_with(
        image: &str,
        sel: &Selection,
        at: impl Fn(&SifImage) -> u64,
    ) -> Option<Report> {
        let s = keyring("keys/private.asc")?;
        let bytes = read_fixture(image)?;
        let img = SifImage::from_bytes(bytes.clone(), image).ok()?;
        let off = usize::try_from(at(&img)).ok()?;
        let mut b = bytes;
        b[off] ^= 0x01;
        let img = SifImage::from_bytes(b, image).ok()?;
        Some(verify(
            &img,
            &KeyMaterial {
                pgp: Some(&s),
                dsse: &[],
            },
            sel,
        ))
    }

    #[test]
    fn test_tampering_is_detected_and_named() {
        let desc = |id: u32, field: u64| 4096 + u64::from(id - 1) * 585 + field;
        let Some(r) = tampered("one-group-signed-pgp.sif", |_| 0) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        assert_eq!(r.outcome, Err(IntegrityError::HeaderIntegrity));
        // The name of object 2.
        let r = tampered("one-group-signed-pgp.sif", |_| desc(2, 73)).expect("fixture");
        assert_eq!(r.outcome, Err(IntegrityError::DescriptorIntegrity(2)));
        assert_eq!(
            ids(&r.results[0]),
            [1],
            "object 1 verified before the failure"
        );
        // The data of object 1.
        let r = tampered("one-group-signed-pgp.sif", |img| {
            img.object(1).expect("1").range().start
        })
        .expect("fixture");
        assert_eq!(r.outcome, Err(IntegrityError::ObjectIntegrity(1)));
        // The signed text itself: the signature no longer verifies.
        let r = tampered("one-group-signed-pgp.sif", |img| {
            img.object(3).expect("3").range().start + 60
        })
        .expect("fixture");
        let err = r.outcome.expect_err("bad signature").to_string();
        assert!(err.starts_with("signature object 3 not valid"), "{err}");
        // Legacy signatures cover the data only.
        let legacy = Selection {
            legacy: true,
            ..Selection::default()
        };
        let r = tampered_with("one-group-signed-legacy.sif", &legacy, |img| {
            img.object(2).expect("2").range().start
        })
        .expect("fixture");
        assert_eq!(r.outcome, Err(IntegrityError::ObjectIntegrity(2)));
        let group = Selection {
            legacy: true,
            groups: vec![1],
            ..Selection::default()
        };
        let r = tampered_with("one-group-signed-legacy-group.sif", &group, |img| {
            img.object(1).expect("1").range().start
        })
        .expect("fixture");
        assert_eq!(
            r.outcome,
            Err(IntegrityError::GroupDataIntegrity("1, 2".into()))
        );
        let r = tampered_with("one-group-signed-legacy.sif", &legacy, |_| 0).expect("fixture");
        assert!(
            r.outcome.is_ok(),
            "legacy signatures do not cover the header"
        );
    }

    #[test]
    fn test_objects_added_to_a_signed_group_or_outside_groups() {
        use crate::image::sif::{ObjectInput, When};
        let (Some(s), Some(bytes)) = (
            keyring("keys/private.asc"),
            read_fixture("one-group-signed-pgp.sif"),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let keys = KeyMaterial {
            pgp: Some(&s),
            dsse: &[],
        };
        let mut img = SifImage::from_bytes(bytes.clone(), "t.sif").expect("load");
        let mut data: &[u8] = b"extra";
        img.add_object(ObjectInput::new(DataType::Generic, &mut data), When::Auto)
            .expect("add");
        let r = verify(&img, &keys, &Selection::default());
        assert_eq!(r.outcome, Err(IntegrityError::ObjectNotSigned(4)));
        let mut img = SifImage::from_bytes(bytes, "t.sif").expect("load");
        let mut data: &[u8] = b"{}";
        let mut input = ObjectInput::new(DataType::GenericJson, &mut data);
        input.group = None;
        img.add_object(input, When::Auto).expect("add");
        let err = verify(&img, &keys, &Selection::default())
            .outcome
            .expect_err("ungrouped")
            .to_string();
        assert!(
            err.contains("object 4 (JSON.Generic) is in no group"),
            "{err}"
        );
    }

    #[test]
    fn test_corrupt_signature_bytes_fail_without_panic() {
        let (Some(s), Some(ed)) = (keyring("keys/private.asc"), pem("ed25519")) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let keys = KeyMaterial {
            pgp: Some(&s),
            dsse: std::slice::from_ref(&ed),
        };
        for image in ["one-group-signed-pgp.sif", "one-group-signed-dsse.sif"] {
            let bytes = read_fixture(image).expect("fixture");
            let img = SifImage::from_bytes(bytes.clone(), image).expect("load");
            let sig = img.object(3).expect("signature").range();
            let mut accepted = Vec::new();
            for at in sig.clone() {
                for flip in [0xFFu8, 0x20] {
                    let mut b = bytes.clone();
                    let i = usize::try_from(at).expect("offset");
                    b[i] ^= flip;
                    let img = SifImage::from_bytes(b, image).expect("load");
                    let report = verify(&img, &keys, &Selection::default());
                    if report.outcome.is_ok() {
                        accepted.push((at - sig.start, flip));
                    }
                }
            }
            // Only bytes no signature covers may change: the case of the armor's hash name,
            // and the informational DSSE key IDs.
            let data = &bytes[usize::try_from(sig.start).expect("start")..];
            let ignorable = |off: u64| -> bool {
                let off = usize::try_from(off).expect("offset");
                let line_start = data[..off]
                    .iter()
                    .rposition(|&c| c == b'\n')
                    .map_or(0, |p| p + 1);
                if data[line_start..].starts_with(b"Hash: ") {
                    return true;
                }
                // Inside `"keyid":"<value>"` (the key's case does not matter to decoders).
                let text = String::from_utf8_lossy(data);
                let keyids: Vec<usize> =
                    text.match_indices("\"keyid\":\"").map(|(k, _)| k).collect();
                let in_keyid = keyids.iter().any(|&k| {
                    let v = k + 9;
                    let value_end = text[v..].find('"').map_or(v, |e| v + e);
                    (k..value_end).contains(&off)
                });
                // The second DSSE signature is the RSA one; the Ed25519 key needs only its own
                // (threshold 1).
                in_keyid || keyids.get(1).is_some_and(|&second| off >= second)
            };
            for (off, flip) in &accepted {
                assert!(ignorable(*off), "{image}: byte {off} ^ {flip:#x} accepted");
            }
            // Truncated signatures.
            for cut in [1u64, 10, 100, 500] {
                let mut b = bytes.clone();
                let i = usize::try_from(sig.end - cut).expect("offset");
                b[i..usize::try_from(sig.end).expect("end")].fill(0);
                let img = SifImage::from_bytes(b, image).expect("load");
                let _ = verify(&img, &keys, &Selection::default());
            }
        }
    }

    #[test]
    fn test_signed_by_all() {
        let (Some(s), Some(img)) = (
            keyring("keys/private.asc"),
            open("two-groups-signed-pgp.sif"),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let keys = KeyMaterial {
            pgp: Some(&s),
            dsse: &[],
        };
        let (report, tasks) = verify_tasks(&img, &keys, &Selection::default());
        assert_eq!(tasks, [vec![4], vec![5]]);
        let all = report.signed_by_all(&tasks);
        assert_eq!(all.len(), 1);
        assert_eq!(pgp::fingerprint_hex(&all[0]), PGP_S);
        assert!(report.signed_by_all(&[vec![4], vec![99]]).is_empty());
    }
}
