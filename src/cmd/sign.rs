//! `sign` and `verify`: choose the key material, run the library, and print what Apptainer
//! prints (INFO lines on stderr, the per-signature report or JSON on stdout).

use std::io::{IsTerminal, Write};
use std::path::Path;

use anyhow::{Context as _, anyhow, bail};

use super::Context;
use crate::cli::sign::{SignArgs, VerifyArgs};
use crate::image::sif::{Descriptor, Link, SifImage, When};
use crate::sign::error::IntegrityError;
use crate::sign::keychoice::{Purpose, choose_key};
use crate::sign::keyring::verification_keyring;
use crate::sign::keyring::{GlobalKeyring, LocalKeyring};
use crate::sign::keyservers::{self, KeyserverList};
use crate::sign::password::PasswordSources;
use crate::sign::pem::{PrivateKey, PublicKey};
use crate::sign::pgp::{self, KeyInfo, KeySource, Keyring};
use crate::sign::signer::{self, SignSelection, SigningKey};
use crate::sign::verify::{self, KeyMaterial, Report, Selection};
use crate::sign::x509;

/// `sign [flags] IMAGE`.
pub fn sign(_ctx: &Context, a: SignArgs) -> anyhow::Result<i32> {
    let image = a.image.display().to_string();
    let sel = SignSelection {
        groups: a.group_id.into_iter().collect(),
        objects: a.sif_id.into_iter().collect(),
    };
    let result = match &a.key {
        Some(pem) => {
            log::info!("Signing image with key material from '{}'", pem.display());
            let key = PrivateKey::load(pem).context("Failed to load key material")?;
            let mut img = SifImage::open_rw(&a.image)?;
            signer::sign(&mut img, &SigningKey::Pem(&key), &sel, When::Now)
        }
        None => {
            log::info!("Signing image with PGP key material");
            let kr = LocalKeyring::at_or_default(a.keysdir.as_deref())?;
            let keys = kr.secret_keys().context("Failed to sign container")?;
            let infos: Vec<KeyInfo> = keys.iter().map(pgp::secret_info).collect();
            let i = choose_key(&infos, a.keyidx, &kr.secret_path(), Purpose::Sign)
                .context("Failed to sign container")?;
            let key = &keys[i];
            let password = if pgp::is_locked(key) {
                let sources = PasswordSources::from_process(a.password_file.clone());
                let pw = sources
                    .obtain("Enter key passphrase : ", false)?
                    .ok_or_else(|| {
                        anyhow!(
                            "Failed to sign container: key {} is password-protected and there is no terminal to ask on; give the password with --password-file FILE or SIFR_KEY_PASSWORD",
                            infos[i].fingerprint
                        )
                    })?;
                let pw = ::pgp::types::Password::from(pw.as_str());
                pgp::check_password(key, &pw)
                    .map_err(|e| anyhow!("Failed to sign container: {e}"))?;
                pw
            } else {
                ::pgp::types::Password::empty()
            };
            let mut img = SifImage::open_rw(&a.image)?;
            signer::sign(
                &mut img,
                &SigningKey::Pgp { key, password },
                &sel,
                When::Now,
            )
        }
    };
    result.map_err(|e| anyhow!("Failed to sign container: {e} ({image})"))?;
    log::info!("Signature created and applied to image '{image}'");
    Ok(0)
}

/// The key material `verify` was asked to use, and what it reports about signers.
struct Material {
    keyring: Option<Keyring>,
    dsse: Vec<PublicKey>,
}

fn material(a: &VerifyArgs) -> anyhow::Result<Material> {
    if a.ocsp_verify {
        bail!(
            "Failed to verify container: --ocsp-verify is not supported: sifr checks certificate chains offline only"
        );
    }
    if let Some(cert) = &a.certificate {
        log::info!(
            "Verifying image with key material from certificate '{}'",
            cert.display()
        );
        let leaf = x509::load_certificates(cert).context("Failed to load certificate")?;
        let intermediates = match &a.certificate_intermediates {
            Some(p) => {
                x509::load_certificates(p).context("Failed to load intermediate certificates")?
            }
            None => Vec::new(),
        };
        let roots = match &a.certificate_roots {
            Some(p) => x509::load_certificates(p).context("Failed to load root certificates")?,
            None => x509::load_certificates(Path::new(x509::SYSTEM_ROOTS)).context(
                "Failed to load the system root certificates (give --certificate-roots)",
            )?,
        };
        let key = x509::verify_code_signing(
            &leaf[0],
            &intermediates,
            &roots,
            std::time::SystemTime::now(),
        )
        .map_err(|e| anyhow!("Failed to verify container: {e}"))?;
        return Ok(Material {
            keyring: None,
            dsse: vec![key],
        });
    }
    if let Some(key) = &a.key {
        log::info!("Verifying image with key material from '{}'", key.display());
        let k = PublicKey::load(key).context("Failed to load key material")?;
        return Ok(Material {
            keyring: None,
            dsse: vec![k],
        });
    }
    log::info!("Verifying image with PGP key material");
    let local = LocalKeyring::at_or_default(a.keysdir.as_deref())?;
    let global = GlobalKeyring::detect()?;
    let kr = verification_keyring(Some(&local), &global)?;
    Ok(Material {
        keyring: Some(kr),
        dsse: Vec::new(),
    })
}

/// `verify [flags] IMAGE`.
pub fn verify(ctx: &Context, a: VerifyArgs) -> anyhow::Result<i32> {
    let mut m = material(&a)?;
    let img = SifImage::open(&a.image)?;
    if let Some(kr) = m.keyring.as_mut()
        && !a.local
    {
        fetch_signers(kr, &img, a.url.as_deref())?;
    }
    let sel = Selection {
        groups: a.group_id.into_iter().collect(),
        objects: a.sif_id.into_iter().collect(),
        all: a.all,
        legacy: a.legacy_insecure,
    };
    let keys = KeyMaterial {
        pgp: m.keyring.as_ref(),
        dsse: &m.dsse,
    };
    let report = verify::verify(&img, &keys, &sel);
    let mut out = std::io::stdout().lock();
    let text = if a.json {
        json_report(&img, &report, m.keyring.as_ref())
    } else {
        let color = !ctx.global.nocolor && std::io::stdout().is_terminal();
        text_report(&report, color)
    };
    out.write_all(text.as_bytes())
        .and_then(|_| out.flush())
        .context("cannot write to standard output")?;
    match report.outcome {
        Ok(()) => {
            if !a.json {
                log::info!("Verified signature(s) from image '{}'", a.image.display());
            }
            Ok(0)
        }
        Err(e) => bail!(
            "Failed to verify container: integrity: {e} ({})",
            a.image.display()
        ),
    }
}

/// Fetches the signers' keys that no local or global keyring holds from the keyserver
/// (`--url`, else the first of `keyserver list`), for this verification only, as Apptainer
/// does without `--local`. With no keyserver configured nothing is fetched: the check then
/// names the unknown key and how to fetch it.
fn fetch_signers(kr: &mut Keyring, img: &SifImage, url: Option<&str>) -> anyhow::Result<()> {
    let missing: Vec<_> = verify::signer_fingerprints(img)
        .into_iter()
        .filter(|fp| kr.source_of(fp).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let list = KeyserverList::load(&keyservers::default_path()?)
        .context("Error while getting keyserver client config")?;
    let ks = match url {
        Some(u) => list.for_uri(u),
        None => match list.keyservers.first() {
            Some(k) => k.clone(),
            None => {
                log::debug!("no keyserver configured: verifying with the local keyrings only");
                return Ok(());
            }
        },
    };
    let client = ks
        .client()
        .context("Error while getting keyserver client config")?;
    for fp in missing {
        let hex = pgp::fingerprint_hex(&fp);
        log::debug!("fetching signing key {hex} from {}", client.base());
        let keys = client.fetch(&hex).map_err(|e| {
            anyhow!("Failed to verify container: signing key {hex} is not in the local keyring and could not be fetched: {e}")
        })?;
        for k in keys {
            if pgp::public_info(&k).fingerprint == hex {
                kr.add(k, KeySource::Remote);
            }
        }
    }
    Ok(())
}

fn group_text(d: &Descriptor) -> String {
    d.group()
        .map(|g| g.to_string())
        .unwrap_or_else(|| "NONE".into())
}

fn link_text(d: &Descriptor) -> String {
    match d.link() {
        Link::None => "NONE".into(),
        Link::Group(g) => format!("{g} (G)"),
        Link::Object(o) => o.to_string(),
    }
}

/// Apptainer's `outputVerify` for every signature checked.
fn text_report(report: &Report, color: bool) -> String {
    let mut s = String::new();
    for r in &report.results {
        if let Some(signer) = &r.signer {
            let (label, code) = match signer.source {
                KeySource::Global => ("[GLOBAL]", "\x1b[36m"),
                KeySource::Local => ("[LOCAL]", "\x1b[32m"),
                KeySource::Remote => ("[REMOTE]", "\x1b[33m"),
            };
            let prefix = if color {
                format!("{code}{label}\x1b[0m{}", " ".repeat(18 - label.len()))
            } else {
                format!("{label:<18}")
            };
            s.push_str(&format!("{prefix} Signing entity: {}\n", signer.user_id));
            s.push_str(&format!(
                "{prefix} Fingerprint: {}\n",
                pgp::fingerprint_hex(&signer.fingerprint)
            ));
        }
        if !r.verified.is_empty() {
            s.push_str("Objects verified:\n");
            s.push_str(&format!(
                "{:<4}|{:<8}|{:<8}|{}\n",
                "ID", "GROUP", "LINK", "TYPE"
            ));
            s.push_str("------------------------------------------------\n");
            for d in &r.verified {
                s.push_str(&format!(
                    "{:<4}|{:<8}|{:<8}|{}\n",
                    d.id,
                    group_text(d),
                    link_text(d),
                    d.data_type.label()
                ));
            }
        }
        if let Some(e) = &r.error {
            s.push_str(&format!(
                "\nError encountered during signature verification: {e}\n"
            ));
        }
    }
    s
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyList {
    signatures: usize,
    signer_keys: Option<Vec<SignerKey>>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct SignerKey {
    signer: KeyEntity,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "PascalCase")]
struct KeyEntity {
    partition: String,
    name: String,
    fingerprint: String,
    key_local: bool,
    key_check: bool,
    data_check: bool,
}

/// Apptainer's `--json` document (Go's encoder: two-space indent, HTML characters escaped).
fn json_report(img: &SifImage, report: &Report, kr: Option<&Keyring>) -> String {
    let mut keys = Vec::new();
    for r in &report.results {
        let entity = |d: &Descriptor, data_check: bool| -> SignerKey {
            let (name, fingerprint, key_local, key_check) = match &r.signer {
                Some(s) => (
                    s.user_id.clone(),
                    hex::encode(s.fingerprint),
                    kr.is_some_and(|k| k.has(&s.fingerprint, KeySource::Local)),
                    true,
                ),
                None => ("unknown".to_string(), String::new(), false, false),
            };
            SignerKey {
                signer: KeyEntity {
                    partition: d.data_type.label().to_string(),
                    name,
                    fingerprint,
                    key_local,
                    key_check,
                    data_check,
                },
            }
        };
        for d in &r.verified {
            keys.push(entity(d, true));
        }
        if let Some(IntegrityError::ObjectIntegrity(id)) = &r.error
            && let Ok(d) = img.object(*id)
        {
            keys.push(entity(d, false));
        }
    }
    let list = KeyList {
        signatures: report.results.len(),
        signer_keys: (!keys.is_empty()).then_some(keys),
    };
    let text = serde_json::to_string_pretty(&list).unwrap_or_default();
    format!(
        "{}\n",
        text.replace('<', "\\u003c")
            .replace('>', "\\u003e")
            .replace('&', "\\u0026")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sign::pgp::tests::read_fixture;
    use crate::sign::verify::tests::keyring;

    #[test]
    fn test_text_and_json_reports_match_apptainer() {
        let (Some(kr), Some(bytes)) = (
            keyring("keys/private.asc"),
            read_fixture("one-group-signed-pgp.sif"),
        ) else {
            crate::testutil::skip("fixtures not found");
            return;
        };
        let img = SifImage::from_bytes(bytes, "t.sif").expect("load");
        let report = verify::verify(
            &img,
            &KeyMaterial {
                pgp: Some(&kr),
                dsse: &[],
            },
            &Selection::default(),
        );
        assert_eq!(
            text_report(&report, false),
            "[LOCAL]            Signing entity: Unit Test <unit@test.com>\n\
             [LOCAL]            Fingerprint: 12045C8C0B1004D058DE4BEDA20C27EE7FF7BA84\n\
             Objects verified:\n\
             ID  |GROUP   |LINK    |TYPE\n\
             ------------------------------------------------\n\
             1   |1       |NONE    |FS\n\
             2   |1       |NONE    |FS\n"
        );
        let json = json_report(&img, &report, Some(&kr));
        assert!(
            json.starts_with("{\n  \"Signatures\": 1,\n  \"SignerKeys\": [\n"),
            "{json}"
        );
        assert!(
            json.contains("\"Name\": \"Unit Test \\u003cunit@test.com\\u003e\""),
            "{json}"
        );
        assert!(json.contains("\"Fingerprint\": \"12045c8c0b1004d058de4beda20c27ee7ff7ba84\""));
        assert!(json.contains("\"KeyLocal\": true") && json.contains("\"DataCheck\": true"));
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid json");
        assert_eq!(v["SignerKeys"].as_array().expect("array").len(), 2);
        assert_eq!(v["SignerKeys"][0]["Signer"]["Partition"], "FS");

        let none = verify::verify(&img, &KeyMaterial::default(), &Selection::default());
        assert_eq!(
            json_report(&img, &none, None),
            "{\n  \"Signatures\": 0,\n  \"SignerKeys\": null\n}\n"
        );
    }
}
