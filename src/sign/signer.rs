//! Signing a SIF image in the current format (spec §9.4): one signature object per group
//! signed (every group by default, or the groups of `--group-id` / `--sif-id`), holding the
//! image metadata clear-signed with a PGP key or wrapped in a DSSE envelope for a PEM key.
//!
//! Every signature is computed before the first one is written, so a failure leaves the
//! image unchanged.

use ::pgp::composed::SignedSecretKey;
use ::pgp::types::Password;

use crate::image::sif::{DataType, Extra, HashType, Link, ObjectInput, SifError, SifImage, When};

use super::digest::HashAlg;
use super::dsse;
use super::error::IntegrityError;
use super::metadata::ImageMetadata;
use super::pem::PrivateKey;
use super::pgp;

/// The key a signature is made with.
pub enum SigningKey<'a> {
    /// A PGP secret key and its password (empty for unlocked keys).
    Pgp {
        key: &'a SignedSecretKey,
        password: Password,
    },
    /// A PEM private key (DSSE signature).
    Pem(&'a PrivateKey),
}

/// What to sign.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SignSelection {
    /// Sign these groups (`--group-id`).
    pub groups: Vec<u32>,
    /// Sign only these objects, one signature per group they are in (`--sif-id`).
    pub objects: Vec<u32>,
}

/// Why an image could not be signed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("integrity: {0}")]
    Integrity(#[from] IntegrityError),
    #[error("integrity: invalid group ID 0")]
    InvalidGroupId,
    #[error("integrity: object {0} is in no group, so it cannot be signed")]
    NoGroup(u32),
    #[error("integrity: failed to sign message: {0}")]
    Crypto(String),
    #[error("integrity: failed to add object: {0}")]
    Add(#[from] SifError),
}

/// One group to sign and the objects its signature covers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupPlan {
    group: u32,
    objects: Vec<u32>,
}

/// The groups and objects to sign, as the reference chooses them.
fn plan(img: &SifImage, sel: &SignSelection) -> Result<Vec<GroupPlan>, SignError> {
    let mut out = Vec::new();
    let group_ids = |g: u32| -> Result<Vec<u32>, SignError> {
        if g == 0 {
            return Err(SignError::InvalidGroupId);
        }
        let ids: Vec<u32> = img.group_objects(g).iter().map(|d| d.id).collect();
        if ids.is_empty() {
            return Err(IntegrityError::GroupNotFound(g).into());
        }
        Ok(ids)
    };
    for &g in &sel.groups {
        out.push(GroupPlan {
            group: g,
            objects: group_ids(g)?,
        });
    }
    if !sel.objects.is_empty() {
        let mut by_group: Vec<GroupPlan> = Vec::new();
        for &id in &sel.objects {
            let d = img
                .objects()
                .find(|d| d.id == id)
                .ok_or(IntegrityError::ObjectNotFound(id))?;
            let g = d.group().ok_or(SignError::NoGroup(id))?;
            match by_group.iter_mut().find(|p| p.group == g) {
                Some(p) => p.objects.push(id),
                None => by_group.push(GroupPlan {
                    group: g,
                    objects: vec![id],
                }),
            }
        }
        by_group.sort_by_key(|p| p.group);
        for p in &mut by_group {
            p.objects.sort_unstable();
            p.objects.dedup();
        }
        out.extend(by_group);
    }
    if out.is_empty() {
        let groups = img.group_ids();
        if groups.is_empty() {
            return Err(IntegrityError::NoGroups.into());
        }
        for g in groups {
            out.push(GroupPlan {
                group: g,
                objects: group_ids(g)?,
            });
        }
    }
    Ok(out)
}

/// Signs `img` (opened for writing) and returns the IDs of the signature objects added.
pub fn sign(
    img: &mut SifImage,
    key: &SigningKey<'_>,
    sel: &SignSelection,
    when: When,
) -> Result<Vec<u32>, SignError> {
    let plans = plan(img, sel)?;
    let (fingerprint, hash_type) = match key {
        SigningKey::Pgp { key, .. } => (
            pgp::fingerprint_of(&key.primary_key).ok_or_else(|| {
                SignError::Crypto("only version 4 OpenPGP keys can sign SIF images".into())
            })?,
            HashType::Sha256,
        ),
        SigningKey::Pem(_) => ([0u8; pgp::FINGERPRINT_LEN], HashType::Sha256),
    };
    let mut signatures = Vec::with_capacity(plans.len());
    for p in &plans {
        let objects: Vec<_> = img
            .objects()
            .filter(|d| p.objects.contains(&d.id))
            .collect();
        let md = ImageMetadata::build(img, p.group, &objects, HashAlg::Sha256)?;
        let json = md.to_json();
        let data = match key {
            SigningKey::Pgp { key, password } => {
                // JSON is ASCII-safe UTF-8 (serde escapes nothing else into it).
                let text = String::from_utf8_lossy(&json);
                pgp::clearsign(&text, key, password).map_err(SignError::Crypto)?
            }
            SigningKey::Pem(k) => dsse::sign(&json, k).map_err(SignError::Crypto)?,
        };
        signatures.push((p.group, data));
    }
    let mut ids = Vec::with_capacity(signatures.len());
    for (group, data) in signatures {
        let mut reader: &[u8] = &data;
        let mut input = ObjectInput::new(DataType::Signature, &mut reader);
        input.group = None;
        input.link = Link::Group(group);
        input.extra = Extra::Signature {
            hash_type,
            fingerprint,
        };
        ids.push(img.add_object(input, when)?);
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::pem::PublicKey;
    use crate::sign::pgp::tests::read_fixture;
    use crate::sign::pgp::{KeySource, Keyring, NewKeyType, generate_key};
    use crate::sign::verify::{KeyMaterial, Selection, verify};

    fn image(name: &str) -> Option<SifImage> {
        SifImage::from_bytes(read_fixture(name)?, name).ok()
    }

    #[test]
    fn test_plan_follows_the_reference() {
        let Some(img) = image("two-groups.sif") else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let p = plan(&img, &SignSelection::default()).expect("plan");
        assert_eq!(
            p,
            [
                GroupPlan {
                    group: 1,
                    objects: vec![1, 2]
                },
                GroupPlan {
                    group: 2,
                    objects: vec![3]
                }
            ]
        );
        let p = plan(
            &img,
            &SignSelection {
                groups: vec![],
                objects: vec![3, 1],
            },
        )
        .expect("plan");
        assert_eq!(p.len(), 2);
        assert_eq!(p[0].objects, [1]);
        assert!(matches!(
            plan(
                &img,
                &SignSelection {
                    groups: vec![5],
                    objects: vec![]
                }
            ),
            Err(SignError::Integrity(IntegrityError::GroupNotFound(5)))
        ));
        assert!(matches!(
            plan(
                &img,
                &SignSelection {
                    groups: vec![0],
                    objects: vec![]
                }
            ),
            Err(SignError::InvalidGroupId)
        ));
        let empty = image("empty.sif").expect("fixture");
        assert!(plan(&empty, &SignSelection::default()).is_err());
    }

    #[test]
    fn test_pgp_sign_then_verify_and_descriptor() {
        let Some(mut img) = image("two-groups.sif") else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let key = generate_key("Signer <s@example.com>", NewKeyType::Ed25519, "").expect("key");
        let ids = sign(
            &mut img,
            &SigningKey::Pgp {
                key: &key,
                password: Password::empty(),
            },
            &SignSelection::default(),
            When::Now,
        )
        .expect("sign");
        assert_eq!(ids, [4, 5]);
        let d = img.object(4).expect("4");
        assert_eq!(d.group(), None);
        assert_eq!(d.link(), Link::Group(1));
        let meta = d.signature().expect("signature");
        assert_eq!(meta.hash_type, HashType::Sha256);
        assert_eq!(
            Some(meta.fingerprint.expect("fp")),
            pgp::fingerprint_of(&key.primary_key)
        );
        let mut kr = Keyring::new();
        kr.add(key.to_public_key(), KeySource::Local);
        let keys = KeyMaterial {
            pgp: Some(&kr),
            dsse: &[],
        };
        let report = verify(&img, &keys, &Selection::default());
        assert!(report.outcome.is_ok(), "{:?}", report.outcome);
        assert_eq!(report.results.len(), 2);
    }

    #[test]
    fn test_dsse_sign_object_subset_then_verify() {
        let (Some(mut img), Some(private)) = (
            image("two-groups.sif"),
            read_fixture("keys/ed25519-private.pem").and_then(|b| PrivateKey::from_pem(&b).ok()),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let ids = sign(
            &mut img,
            &SigningKey::Pem(&private),
            &SignSelection {
                groups: vec![],
                objects: vec![2],
            },
            When::Now,
        )
        .expect("sign");
        assert_eq!(ids, [4]);
        assert_eq!(
            img.object(4)
                .expect("4")
                .signature()
                .expect("sig")
                .fingerprint,
            None
        );
        let public: PublicKey = private.public();
        let keys = KeyMaterial {
            pgp: None,
            dsse: std::slice::from_ref(&public),
        };
        // Only object 2 was signed: checking object 2 passes, the whole group does not.
        let only2 = Selection {
            objects: vec![2],
            ..Selection::default()
        };
        assert!(verify(&img, &keys, &only2).outcome.is_ok());
        let whole = Selection {
            groups: vec![1],
            ..Selection::default()
        };
        assert_eq!(
            verify(&img, &keys, &whole).outcome,
            Err(IntegrityError::ObjectNotSigned(1))
        );
    }

    #[test]
    fn test_failure_leaves_image_unchanged() {
        let Some(mut img) = image("one-group.sif") else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let before = img.as_bytes().expect("memory").to_vec();
        let key =
            generate_key("Locked <l@example.com>", NewKeyType::Ed25519, "secret").expect("key");
        let err = sign(
            &mut img,
            &SigningKey::Pgp {
                key: &key,
                password: Password::from("wrong"),
            },
            &SignSelection::default(),
            When::Now,
        )
        .expect_err("wrong password");
        assert!(
            err.to_string()
                .starts_with("integrity: failed to sign message"),
            "{err}"
        );
        assert_eq!(img.as_bytes().expect("memory"), before.as_slice());
    }
}
