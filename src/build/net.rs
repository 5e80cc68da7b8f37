//! `http://` and `https://` images (Apptainer's `net` client): a plain GET of an image file,
//! kept in the cache's `net/` directory under a digest of the URL and its `Last-Modified`
//! date (so a file changed on the server is fetched again; without a date nothing is reused,
//! as in Apptainer).
//!
//! What arrives is checked before it is renamed into place: exactly `Content-Length` bytes
//! when the server says how many, and an image sifr can run (SIF, squashfs or ext2/3/4), so
//! an error page served with status 200 or a truncated transfer never becomes an image.
//!
//! A download into the cache that breaks off keeps its bytes (see
//! [`super::oci::partial`]): the next pull of the same URL and date asks for the rest with
//! `Range` (and `If-Range` with the date), and starts over when the server sends the whole
//! file (`200`, as servers without range support do) or cannot serve the range.

use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tempfile::{NamedTempFile, TempPath};

use super::oci::BlobCache;
use super::oci::cache::CacheError;
use super::oci::digest::Digest;
use super::oci::partial::{self, Answer, Partial};

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
    let write_err = |path: &Path, err| NetError::Write {
        url: url.to_string(),
        path: path.to_path_buf(),
        err,
    };
    // Into the cache: through the entry's partial file, continued where an interrupted
    // download left it. Otherwise a temporary file, removed when dropped (on any failure).
    let mut sink = match &cached {
        Some(p) => {
            let partial = Partial::open(p).map_err(|e| write_err(p, e))?;
            Sink::Partial(partial)
        }
        None => Sink::Temp(
            tempfile::Builder::new()
                .prefix(".sifr-download-")
                .tempfile_in(tmpdir)
                .map_err(|e| write_err(tmpdir, e))?,
        ),
    };
    let (mut resp, expected) = loop {
        let offset = sink.offset();
        let mut req = agent.get(url);
        if offset > 0 {
            req = req.header("Range", format!("bytes={offset}-"));
            // Only the file of the date the partial download was made from is continued.
            if let Some(date) = &modified {
                req = req.header("If-Range", date);
            }
        }
        let resp = req.call().map_err(connect)?;
        let status = resp.status().as_u16();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let content_range = header("content-range");
        match partial::answer(status, content_range.as_deref(), offset, None) {
            Some(Answer::Continue) if status == 206 => {
                log::debug!("resuming {url} at byte {offset}");
                let total = content_range
                    .as_deref()
                    .and_then(partial::parse_content_range)
                    .and_then(|r| r.total);
                break (resp, total);
            }
            Some(Answer::FromStart) => {
                if offset > 0 {
                    log::debug!("the server sent all of {url}: downloading from the start");
                }
                sink.restart().map_err(|e| write_err(sink.path(), e))?;
                break (resp, length);
            }
            Some(Answer::Refetch) if offset > 0 => {
                log::debug!("cannot resume {url} at byte {offset}: starting over");
                sink.restart().map_err(|e| write_err(sink.path(), e))?;
            }
            _ => {
                return Err(NetError::Status {
                    url: url.to_string(),
                    status,
                    reason: reason(status),
                });
            }
        }
    };
    log::debug!("downloading {url}");
    sink.rehash().map_err(|e| write_err(sink.path(), e))?;
    let progress = crate::progress::Progress::bytes("Downloading image", expected);
    progress.set_position(sink.offset());
    let mut reader = progress.reader(crate::build::workdir::Interruptible::new(
        resp.body_mut().as_reader(),
    ));
    let mut got = sink.offset();
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
        sink.write_all(&buf[..n])
            .map_err(|e| write_err(sink.path(), e))?;
    }
    if let Some(expected) = expected.filter(|e| *e != got) {
        return Err(NetError::Truncated {
            url: url.to_string(),
            expected,
            got,
        });
    }
    sink.flush().map_err(|e| write_err(sink.path(), e))?;
    if crate::image::detect(sink.path()).is_err() {
        sink.discard();
        return Err(NetError::NotImage {
            url: url.to_string(),
        });
    }
    // As Apptainer leaves a pulled image: 0755 (a SIF runs directly).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(sink.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| write_err(sink.path(), e))?;
    match sink {
        Sink::Partial(p) => {
            let target = cached.clone().unwrap_or_default();
            let path = p.persist().map_err(|e| write_err(&target, e))?;
            Ok((path, None))
        }
        Sink::Temp(tmp) => {
            let tmp = tmp.into_temp_path();
            Ok((tmp.to_path_buf(), Some(tmp)))
        }
    }
}

/// Where a download is written.
enum Sink {
    /// The cache entry's partial file (kept when the download is interrupted).
    Partial(Partial),
    /// A temporary file (removed when dropped).
    Temp(NamedTempFile),
}

impl Sink {
    fn offset(&self) -> u64 {
        match self {
            Sink::Partial(p) => p.offset(),
            Sink::Temp(_) => 0,
        }
    }

    fn path(&self) -> &Path {
        match self {
            Sink::Partial(p) => p.path(),
            Sink::Temp(t) => t.path(),
        }
    }

    fn restart(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Partial(p) => p.restart(),
            Sink::Temp(t) => {
                t.as_file().set_len(0)?;
                t.as_file_mut().rewind()
            }
        }
    }

    /// Positions at the end of the bytes already there (no digest to check: the size and
    /// the image header are checked at the end).
    fn rehash(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Partial(p) => p.rehash(None),
            Sink::Temp(_) => Ok(()),
        }
    }

    fn write_all(&mut self, buf: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Partial(p) => p.write_all(buf),
            Sink::Temp(t) => t.write_all(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Partial(_) => Ok(()),
            Sink::Temp(t) => t.as_file().flush(),
        }
    }

    fn discard(self) {
        if let Sink::Partial(p) = self {
            p.discard();
        }
    }
}
