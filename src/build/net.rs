//! `http://` and `https://` images (Apptainer's `net` client): a plain GET of an image file,
//! kept in the cache's `net/` directory under a digest of the URL and its `Last-Modified`
//! date (so a file changed on the server is fetched again; without a date nothing is reused,
//! as in Apptainer).
//!
//! What arrives is checked before it is renamed into place: exactly `Content-Length` bytes
//! when the server says how many, and an image sifr can run (SIF, squashfs or ext2/3/4), so
//! an error page served with status 200 or a truncated transfer never becomes an image.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::TempPath;

use super::oci::BlobCache;
use super::oci::cache::CacheError;
use super::oci::digest::Digest;

/// Why an image could not be downloaded.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot download {url}: {err}")]
    Connect { url: String, err: Box<ureq::Error> },
    #[error("cannot download {url}: the server answered HTTP {status} ({reason})")]
    Status {
        url: String,
        status: u16,
        reason: &'static str,
    },
    #[error("cannot download {url}: the transfer broke off after {got} bytes: {err}")]
    Transfer {
        url: String,
        got: u64,
        err: std::io::Error,
    },
    #[error(
        "cannot download {url}: the server announced {expected} bytes and sent {got} \
         (truncated download)"
    )]
    Truncated {
        url: String,
        expected: u64,
        got: u64,
    },
    #[error(
        "{url} is not a container image (no SIF, squashfs or ext2/3/4 header in what the \
         server sent)"
    )]
    NotImage { url: String },
    #[error("cannot write the download of {url} to {}: {err}", path.display())]
    Write {
        url: String,
        path: PathBuf,
        err: std::io::Error,
    },
    #[error(transparent)]
    Cache(#[from] CacheError),
}

/// The agent for image downloads: the system's trust store, proxies from the environment,
/// statuses returned rather than raised.
fn agent() -> ureq::Agent {
    let tls = ureq::tls::TlsConfig::builder()
        .root_certs(ureq::tls::RootCerts::PlatformVerifier)
        .build();
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .user_agent(format!("sifr/{}", crate::compat::SIFR_VERSION))
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(120)))
        .tls_config(tls)
        .build()
        .into()
}

fn reason(status: u16) -> &'static str {
    match status {
        401 => "authentication required; sifr sends no credentials to http(s) servers",
        403 => "access denied",
        404 => "the requested image was not found",
        s if s >= 500 => "server error",
        _ => "not a successful download",
    }
}

/// Downloads the image at `url`. With `cache`, a copy kept there for the same URL and date
/// is reused and a new download is kept there; the path is returned with no temporary file.
/// Without it (or when the server gives no date), the image goes to a temporary file in
/// `tmpdir`, returned with the path for the caller to remove.
pub fn download(
    url: &str,
    cache: Option<&BlobCache>,
    tmpdir: &Path,
) -> Result<(PathBuf, Option<TempPath>), NetError> {
    let agent = agent();
    let connect = |err| NetError::Connect {
        url: url.to_string(),
        err: Box::new(err),
    };
    // The date first (Apptainer's HEAD), to find a cached copy without downloading.
    let head = agent.head(url).call().map_err(connect)?;
    let modified = head
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let cached = match (cache, &modified) {
        (Some(c), Some(date)) => {
            let key = Digest::sha256_of(format!("{url}{date}").as_bytes());
            Some(c.net_path(key.hex()))
        }
        _ => None,
    };
    if let Some(p) = cached.as_ref().filter(|p| p.is_file()) {
        log::info!("Using cached image");
        return Ok((p.clone(), None));
    }
    let dir = match &cached {
        Some(p) => p.parent().unwrap_or(tmpdir).to_path_buf(),
        None => tmpdir.to_path_buf(),
    };
    let mut resp = agent.get(url).call().map_err(connect)?;
    let status = resp.status().as_u16();
    if status != 200 {
        return Err(NetError::Status {
            url: url.to_string(),
            status,
            reason: reason(status),
        });
    }
    log::debug!("downloading {url}");
    let expected = resp
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    let write_err = |path: &Path, err| NetError::Write {
        url: url.to_string(),
        path: path.to_path_buf(),
        err,
    };
    // Removed when dropped: on any failure below.
    let mut tmp = tempfile::Builder::new()
        .prefix(".sifr-download-")
        .tempfile_in(&dir)
        .map_err(|e| write_err(&dir, e))?;
    let progress = crate::progress::Progress::bytes("Downloading image", expected);
    let mut reader = progress.reader(crate::build::workdir::Interruptible::new(
        resp.body_mut().as_reader(),
    ));
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => {
                return Err(NetError::Transfer {
                    url: url.to_string(),
                    got,
                    err,
                });
            }
        };
        got += n as u64;
        tmp.write_all(&buf[..n])
            .map_err(|e| write_err(tmp.path(), e))?;
    }
    if let Some(expected) = expected.filter(|e| *e != got) {
        return Err(NetError::Truncated {
            url: url.to_string(),
            expected,
            got,
        });
    }
    tmp.as_file()
        .flush()
        .map_err(|e| write_err(tmp.path(), e))?;
    if crate::image::detect(tmp.path()).is_err() {
        return Err(NetError::NotImage {
            url: url.to_string(),
        });
    }
    // As Apptainer leaves a pulled image: 0755 (a SIF runs directly).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| write_err(tmp.path(), e))?;
    let tmp = tmp.into_temp_path();
    match cached {
        Some(path) => {
            tmp.persist(&path).map_err(|e| write_err(&path, e.error))?;
            Ok((path, None))
        }
        None => Ok((tmp.to_path_buf(), Some(tmp))),
    }
}
