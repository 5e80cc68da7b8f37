//! The image metadata a current-format signature covers (spec §9.1): a compact JSON document
//! with the header digest and, per signed object, its ID relative to its group, its
//! descriptor digest and its data digest. Building it, encoding it byte for byte as Go's
//! `json.Marshal` does, decoding it, and checking it against an image.

use serde::{Deserialize, Serialize};

use crate::image::sif::{Descriptor, SifImage};

use super::digest::{Digest, HashAlg, descriptor_digest, header_digest, object_digest};
use super::error::IntegrityError;

/// The only metadata version there is.
pub const METADATA_VERSION: u32 = 1;

/// `{"version":1,"header":{...},"objects":[...]}`, fields in the reference's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageMetadata {
    pub version: u32,
    pub header: HeaderMetadata,
    pub objects: Vec<ObjectMetadata>,
}

/// `{"digest":"<alg>:<hex>"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMetadata {
    pub digest: Digest,
}

/// One signed object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMetadata {
    pub relative_id: u32,
    pub descriptor_digest: Digest,
    pub object_digest: Digest,
}

/// The smallest ID among the objects of group `group` (what relative IDs count from).
pub fn group_min_id(img: &SifImage, group: u32) -> Option<u32> {
    img.objects()
        .filter(|d| d.group() == Some(group))
        .map(|d| d.id)
        .min()
}

impl ImageMetadata {
    /// The metadata for `objects` (all in group `group`, any order) hashed with `alg`.
    pub fn build(
        img: &SifImage,
        group: u32,
        objects: &[&Descriptor],
        alg: HashAlg,
    ) -> Result<ImageMetadata, IntegrityError> {
        let min = group_min_id(img, group).ok_or(IntegrityError::GroupNotFound(group))?;
        let mut sorted: Vec<&Descriptor> = objects.to_vec();
        sorted.sort_by_key(|d| d.id);
        sorted.dedup_by_key(|d| d.id);
        let mut out = Vec::with_capacity(sorted.len());
        for d in sorted {
            out.push(ObjectMetadata {
                relative_id: d.id.saturating_sub(min),
                descriptor_digest: descriptor_digest(img, d, alg),
                object_digest: object_digest(img, d, alg)?,
            });
        }
        Ok(ImageMetadata {
            version: METADATA_VERSION,
            header: HeaderMetadata {
                digest: header_digest(img, alg),
            },
            objects: out,
        })
    }

    /// The compact JSON the signature covers.
    pub fn to_json(&self) -> Vec<u8> {
        // Serializing plain structs of strings and integers cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Decodes signed JSON.
    pub fn from_json(bytes: &[u8]) -> Result<ImageMetadata, String> {
        let md: ImageMetadata = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if md.version != METADATA_VERSION {
            return Err(format!(
                "unsupported image metadata version {} (only {METADATA_VERSION} is known)",
                md.version
            ));
        }
        Ok(md)
    }

    /// The absolute IDs the metadata names, given the group's current minimum ID.
    fn absolute_ids(&self, min: u32) -> Vec<u32> {
        self.objects
            .iter()
            .map(|o| min.saturating_add(o.relative_id))
            .collect()
    }

    /// Checks that the metadata names exactly the objects in `current` (the reference's
    /// `objectIDsMatch`): an object in the group but not signed, or signed but gone, fails.
    pub fn ids_match(&self, min: u32, current: &[&Descriptor]) -> Result<(), IntegrityError> {
        let signed = self.absolute_ids(min);
        for d in current {
            if !signed.contains(&d.id) {
                return Err(IntegrityError::ObjectNotSigned(d.id));
            }
        }
        for id in signed {
            if !current.iter().any(|d| d.id == id) {
                return Err(IntegrityError::SignedObjectNotFound(id));
            }
        }
        Ok(())
    }

    /// Checks the header digest, then each of `objects`' descriptor and data digests.
    /// Returns the objects verified, in the order checked, even on failure (the reference
    /// reports those that passed before the first failure).
    pub fn check<'a>(
        &self,
        img: &SifImage,
        min: u32,
        objects: &[&'a Descriptor],
    ) -> (Vec<&'a Descriptor>, Result<(), IntegrityError>) {
        let mut verified = Vec::new();
        let h = &self.header.digest;
        if !h.matches(&img.header_digest_input()) {
            return (verified, Err(IntegrityError::HeaderIntegrity));
        }
        for d in objects {
            let Some(om) = self
                .objects
                .iter()
                .find(|o| min.saturating_add(o.relative_id) == d.id)
            else {
                return (verified, Err(IntegrityError::ObjectNotSigned(d.id)));
            };
            if !om
                .descriptor_digest
                .matches(&img.descriptor_digest_input(d))
            {
                return (verified, Err(IntegrityError::DescriptorIntegrity(d.id)));
            }
            match object_digest(img, d, om.object_digest.alg) {
                Ok(got) if got == om.object_digest => {}
                Ok(_) => return (verified, Err(IntegrityError::ObjectIntegrity(d.id))),
                Err(e) => return (verified, Err(e)),
            }
            verified.push(*d);
        }
        (verified, Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Option<SifImage> {
        SifImage::open(crate::testutil::sif_fixture(name)).ok()
    }

    /// The JSON signed inside a clear-signed fixture (the line after the blank line).
    fn signed_json(img: &SifImage, sig_id: u32) -> Vec<u8> {
        let d = img.object(sig_id).expect("signature object");
        let data = img.read_object(d, 1 << 20).expect("read");
        let text = String::from_utf8(data).expect("utf-8");
        let body = text.split("\n\n").nth(1).expect("body");
        body.lines().next().expect("json line").as_bytes().to_vec()
    }

    #[test]
    fn test_build_matches_go_fixture_byte_for_byte() {
        let Some(img) = fixture("one-group-signed-pgp.sif") else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let objs = img.group_objects(1);
        let md = ImageMetadata::build(&img, 1, &objs, HashAlg::Sha256).expect("build");
        assert_eq!(
            String::from_utf8(md.to_json()).expect("utf-8"),
            String::from_utf8(signed_json(&img, 3)).expect("utf-8")
        );
        let parsed = ImageMetadata::from_json(&signed_json(&img, 3)).expect("parse");
        assert_eq!(parsed, md);
        let (ok, res) = parsed.check(&img, 1, &objs);
        assert_eq!(ok.len(), 2);
        res.expect("matches");
        parsed.ids_match(1, &objs).expect("same objects");
    }

    #[test]
    fn test_two_groups_relative_ids() {
        let Some(img) = fixture("two-groups-signed-pgp.sif") else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let objs = img.group_objects(2);
        let md = ImageMetadata::build(&img, 2, &objs, HashAlg::Sha256).expect("build");
        assert_eq!(md.objects.len(), 1);
        assert_eq!(md.objects[0].relative_id, 0);
        assert_eq!(md.to_json(), signed_json(&img, 5));
    }

    #[test]
    fn test_ids_match_rules() {
        let Some(img) = fixture("two-groups.sif") else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let g1 = img.group_objects(1);
        let md = ImageMetadata::build(&img, 1, &g1[..1], HashAlg::Sha256).expect("build");
        assert_eq!(
            md.ids_match(1, &g1),
            Err(IntegrityError::ObjectNotSigned(2))
        );
        let md = ImageMetadata::build(&img, 1, &g1, HashAlg::Sha384).expect("build");
        assert_eq!(
            md.ids_match(1, &g1[..1]),
            Err(IntegrityError::SignedObjectNotFound(2))
        );
        md.ids_match(1, &g1).expect("equal");
        assert!(ImageMetadata::build(&img, 9, &g1, HashAlg::Sha256).is_err());
    }

    #[test]
    fn test_from_json_rejects_bad_input() {
        assert!(ImageMetadata::from_json(b"").is_err());
        assert!(ImageMetadata::from_json(b"{}").is_err());
        let v2 = br#"{"version":2,"header":{"digest":"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},"objects":[]}"#;
        let err = ImageMetadata::from_json(v2).expect_err("version 2");
        assert!(err.contains("version 2"), "{err}");
        let bad_digest = br#"{"version":1,"header":{"digest":"sha256:00"},"objects":[]}"#;
        assert!(ImageMetadata::from_json(bad_digest).is_err());
    }
}
