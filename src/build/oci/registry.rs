//! A client for OCI distribution registries (`docker://`): manifests, image indexes, configs
//! and layer blobs over HTTP(S), with anonymous, Basic and Bearer-token authentication.
//!
//! The flow of one request: send it with the current authorization; on 401 read the
//! `WWW-Authenticate` challenge, obtain a token (Bearer: GET the realm with the service and a
//! `repository:NAME:pull` scope, sending the credentials as Basic if there are any) or switch
//! to Basic, and retry once. A second 401 means the credentials were rejected. Tokens are
//! kept for later requests and renewed the same way when they expire.
//!
//! HTTP goes through `ureq` (blocking, small, rustls for TLS with the system's trust store);
//! `--no-https` ([`FetchOptions::plain_http`]) talks plain HTTP for local registries.
//! Proxies come from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`.

use std::path::PathBuf;
use std::time::Duration;

use ureq::http::{Method, Response, StatusCode};

use super::auth::{Challenge, CredentialOrigin, Credentials, parse_challenges};
use super::cache::{BlobCache, CacheError};
use super::digest::{Digest, Mismatch};
use super::partial::{self, Answer, Partial};
use super::reference::ImageRef;
use super::spec::{
    self, Descriptor, MANIFEST_ACCEPT, Manifest, ManifestDoc, PlatformSpec, SpecError,
};

/// Manifests and indexes larger than this are refused (registries cap them at 4 MiB).
const MAX_MANIFEST_BYTES: u64 = 4 << 20;
/// Image configs larger than this are refused.
const MAX_CONFIG_BYTES: u64 = 32 << 20;
const MAX_TOKEN_BYTES: u64 = 1 << 20;
const MAX_ERROR_BYTES: u64 = 64 << 10;
/// Indexes may point at indexes; more levels than this is a loop or an attack.
const MAX_INDEX_DEPTH: usize = 4;

/// How to fetch an image: how to talk to a registry, and which platform to pick from an
/// image index (for local layouts too).
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// `--no-https`: plain HTTP instead of HTTPS.
    pub plain_http: bool,
    /// Credentials, already looked up (see [`super::auth::CredentialQuery`]).
    pub credentials: Option<(Credentials, CredentialOrigin)>,
    /// The platform to pick from an image index.
    pub platform: PlatformSpec,
}

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            plain_http: false,
            credentials: None,
            platform: PlatformSpec::host(),
        }
    }
}

/// What went wrong talking to a registry. Messages name the registry and the image.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach registry {url}: {err}{hint}")]
    Connect {
        url: String,
        err: Box<ureq::Error>,
        hint: &'static str,
    },
    #[error(
        "registry {registry} requires authentication for {image}: give --docker-username and \
         --docker-password (or set SIFR_DOCKER_USERNAME/SIFR_DOCKER_PASSWORD)"
    )]
    AuthRequired { registry: String, image: String },
    #[error(
        "registry {registry} rejected the credentials of user {user:?} (from {origin}) for {image}"
    )]
    CredentialsRejected {
        registry: String,
        user: String,
        origin: CredentialOrigin,
        image: String,
    },
    #[error(
        "registry {registry} asks for an unsupported authentication scheme ({schemes}) for {image}"
    )]
    UnsupportedAuth {
        registry: String,
        schemes: String,
        image: String,
    },
    #[error("registry {registry} denies access to {image}{message}")]
    Denied {
        registry: String,
        image: String,
        message: String,
    },
    #[error("{what} not found in registry {registry}{message}")]
    NotFound {
        what: String,
        registry: String,
        message: String,
    },
    #[error(
        "registry {registry} is rate-limiting requests (HTTP 429){message}; try again later or log in"
    )]
    RateLimited { registry: String, message: String },
    #[error("registry {registry} answered HTTP {status} for {url}{message}")]
    Status {
        registry: String,
        status: u16,
        url: String,
        message: String,
    },
    #[error("token server {realm} for registry {registry} gave no usable token: {detail}")]
    BadToken {
        realm: String,
        registry: String,
        detail: String,
    },
    #[error("reading {what} from registry {registry}: {err}")]
    Transfer {
        what: String,
        registry: String,
        err: Box<ureq::Error>,
    },
    #[error("{what} from registry {registry} is larger than {limit} bytes")]
    TooLarge {
        what: String,
        registry: String,
        limit: u64,
    },
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Mismatch(#[from] Mismatch),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{image}: image indexes nest more than {MAX_INDEX_DEPTH} levels deep")]
    TooDeep { image: String },
    #[error("cannot make a request to {url}: {detail}")]
    Request { url: String, detail: String },
    #[error("cannot read {}: {err}", path.display())]
    Local { path: PathBuf, err: std::io::Error },
}

/// The body of a request sent to a registry (a file is opened again for a retry).
pub(crate) enum SendData<'a> {
    Empty,
    Bytes(&'a [u8]),
    /// A file, with the label of its upload's progress bar.
    File(&'a std::path::Path, &'a str),
}

/// The authorization currently sent with requests.
#[derive(Debug, Clone)]
enum Authorization {
    Anonymous,
    Basic,
    Bearer(String),
}

/// A manifest chosen for one platform, with the raw bytes that hash to its digest.
#[derive(Debug, Clone)]
pub struct ResolvedManifest {
    pub digest: Digest,
    pub bytes: Vec<u8>,
    pub manifest: Manifest,
}

/// A connection to one repository of one registry.
pub struct RegistryClient {
    agent: ureq::Agent,
    base: String,
    image: ImageRef,
    options: FetchOptions,
    auth: Authorization,
    /// Checking a login: tokens are asked for without a repository scope.
    login_check: bool,
    /// Tokens are asked for with the push scope too (see [`RegistryClient::for_push`]).
    push: bool,
}

impl RegistryClient {
    pub fn new(image: &ImageRef, options: FetchOptions) -> RegistryClient {
        let scheme = if options.plain_http { "http" } else { "https" };
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            // Blob downloads redirect to storage backends; the registry's credentials must
            // not follow them to another host.
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .user_agent(format!("sifr/{}", crate::compat::SIFR_VERSION))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_per_read(Some(Duration::from_secs(120)))
            .tls_config(tls)
            .build()
            .into();
        RegistryClient {
            agent,
            base: format!("{scheme}://{}", image.api_host()),
            image: image.clone(),
            options,
            auth: Authorization::Anonymous,
            login_check: false,
            push: false,
        }
    }

    /// A client that uploads: its tokens carry the `pull,push` scope.
    pub fn for_push(image: &ImageRef, options: FetchOptions) -> RegistryClient {
        let mut c = RegistryClient::new(image, options);
        c.push = true;
        c
    }

    /// The base URL of the registry's API (`https://HOST`, or `http://` with `--no-https`).
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Checks this client's credentials against the registry's API root (`GET /v2/`), as
    /// `docker login` does: a Basic registry must accept them there, a Bearer one's token
    /// server must give a token for them (asked without a repository scope).
    pub fn check_login(&mut self) -> Result<(), RegistryError> {
        self.login_check = true;
        let url = format!("{}/v2/", self.base);
        self.get(&url, None, "the registry's API root").map(|_| ())
    }

    /// The image this client serves.
    pub fn image(&self) -> &ImageRef {
        &self.image
    }

    /// Fetches the image's manifest, following an index to this client's platform.
    pub fn resolve(&mut self) -> Result<ResolvedManifest, RegistryError> {
        let top = self.image.manifest_reference();
        let (mut bytes, mut content_type) = self.fetch_manifest_bytes(&top)?;
        let mut digest = match self.image.digest() {
            Some(d) => {
                let actual = d.same_algorithm_of(&bytes);
                if &actual != d {
                    return Err(Mismatch::Digest {
                        what: format!("manifest of {}", self.image),
                        expected: d.clone(),
                        actual,
                    }
                    .into());
                }
                d.clone()
            }
            None => Digest::sha256_of(&bytes),
        };
        for _ in 0..=MAX_INDEX_DEPTH {
            let what = format!("manifest {digest} of {}", self.image);
            match spec::parse_manifest(&bytes, content_type.as_deref(), &what)? {
                ManifestDoc::Image(manifest) => {
                    return Ok(ResolvedManifest {
                        digest,
                        bytes,
                        manifest,
                    });
                }
                ManifestDoc::Index(index) => {
                    let chosen = self.options.platform.select(&index, &what)?.clone();
                    let (b, ct) = self.fetch_manifest_bytes(&chosen.digest.to_string())?;
                    verify_bytes(
                        &b,
                        &chosen,
                        &format!("manifest {} of {}", chosen.digest, self.image),
                    )?;
                    bytes = b;
                    content_type = ct.or(Some(chosen.media_type.clone()).filter(|m| !m.is_empty()));
                    digest = chosen.digest;
                }
            }
        }
        Err(RegistryError::TooDeep {
            image: self.image.to_string(),
        })
    }

    /// Fetches a small blob (an image config) into memory, verified.
    pub fn fetch_blob_bytes(
        &mut self,
        d: &Descriptor,
        limit: u64,
    ) -> Result<Vec<u8>, RegistryError> {
        let what = format!("blob {} of {}", d.digest, self.image);
        if d.size > limit {
            return Err(RegistryError::TooLarge {
                what,
                registry: self.image.registry().to_string(),
                limit,
            });
        }
        let url = self.blob_url(&d.digest);
        let mut resp = self.get(&url, None, &what)?;
        let bytes = self.read_limited(&mut resp, limit, &what)?;
        verify_bytes(&bytes, d, &what)?;
        Ok(bytes)
    }

    /// Fetches the config blob of a resolved manifest.
    pub fn fetch_config(&mut self, m: &ResolvedManifest) -> Result<Vec<u8>, RegistryError> {
        self.fetch_blob_bytes(&m.manifest.config, MAX_CONFIG_BYTES)
    }

    /// Downloads a blob into the cache unless it is already there. Returns its path.
    pub fn download_blob(
        &mut self,
        d: &Descriptor,
        cache: &BlobCache,
    ) -> Result<PathBuf, RegistryError> {
        if cache.contains(&d.digest, Some(d.size)) {
            log::debug!("blob {} already in the cache", d.digest.short());
            return Ok(cache.blob_path(&d.digest));
        }
        log::debug!(
            "copying blob {} ({} bytes) from {}",
            d.digest.short(),
            d.size,
            self.image
        );
        let what = format!("blob {} of {}", d.digest, self.image);
        self.download_resumable(
            &d.digest,
            d.size,
            cache.blob_path(&d.digest),
            cache,
            &what,
            &format!("Copying blob {}", d.digest.short()),
        )
    }

    /// Downloads the blob `digest` of `size` bytes into the cache file `path`, continuing
    /// the partial download an earlier pull left (see [`super::partial`]) when the
    /// registry answers the range request; `what` names it in errors, `label` on the
    /// progress bar.
    pub(crate) fn download_resumable(
        &mut self,
        digest: &Digest,
        size: u64,
        path: PathBuf,
        cache: &BlobCache,
        what: &str,
        label: &str,
    ) -> Result<PathBuf, RegistryError> {
        let url = self.blob_url(digest);
        let partial_err = |err| CacheError::Write {
            path: path.clone(),
            err,
        };
        let mut partial = Partial::open(&path).map_err(partial_err)?;
        if partial.offset() >= size {
            partial.restart().map_err(partial_err)?;
        }
        let resp = loop {
            let offset = partial.offset();
            let range = (offset > 0).then(|| format!("bytes={offset}-"));
            let resp = self.exchange_with(
                Method::GET,
                &url,
                None,
                None,
                range.as_deref(),
                &SendData::Empty,
            )?;
            let content_range = resp
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok());
            match partial::answer(resp.status().as_u16(), content_range, offset, Some(size)) {
                Some(Answer::Continue) => {
                    if offset > 0 {
                        log::debug!("resuming {digest} at byte {offset}");
                    }
                    break resp;
                }
                Some(Answer::FromStart) => {
                    if offset > 0 {
                        log::debug!(
                            "{} ignored the range request: downloading {digest} from the start",
                            self.image.registry()
                        );
                    }
                    partial.restart().map_err(partial_err)?;
                    break resp;
                }
                Some(Answer::Refetch) if offset > 0 => {
                    log::debug!("cannot resume {digest} at byte {offset}: starting over");
                    partial.restart().map_err(partial_err)?;
                }
                _ => break self.success(resp, &url, what)?,
            }
        };
        let progress = crate::progress::Progress::bytes(label, Some(size));
        progress.set_position(partial.offset());
        let mut reader = progress.reader(crate::build::workdir::Interruptible::new(
            resp.into_body().into_reader(),
        ));
        match cache.store_partial(partial, digest, Some(size), &mut reader, what) {
            Ok(p) => Ok(p),
            Err(CacheError::Read { err, .. }) => Err(RegistryError::Transfer {
                what: what.to_string(),
                registry: self.image.registry().to_string(),
                err: Box::new(ureq::Error::Io(err)),
            }),
            Err(e) => Err(e.into()),
        }
    }

    pub(crate) fn blob_url(&self, d: &Digest) -> String {
        format!("{}/v2/{}/blobs/{d}", self.base, self.image.repository())
    }

    fn fetch_manifest_bytes(
        &mut self,
        reference: &str,
    ) -> Result<(Vec<u8>, Option<String>), RegistryError> {
        let url = format!(
            "{}/v2/{}/manifests/{reference}",
            self.base,
            self.image.repository()
        );
        let what = format!("manifest {reference} of {}", self.image);
        let mut resp = self.get(&url, Some(MANIFEST_ACCEPT), &what)?;
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = self.read_limited(&mut resp, MAX_MANIFEST_BYTES, &what)?;
        Ok((bytes, content_type))
    }

    fn read_limited(
        &self,
        resp: &mut Response<ureq::Body>,
        limit: u64,
        what: &str,
    ) -> Result<Vec<u8>, RegistryError> {
        match resp.body_mut().with_config().limit(limit).read_to_vec() {
            Ok(b) => Ok(b),
            Err(ureq::Error::BodyExceedsLimit(_)) => Err(RegistryError::TooLarge {
                what: what.to_string(),
                registry: self.image.registry().to_string(),
                limit,
            }),
            Err(err) => Err(RegistryError::Transfer {
                what: what.to_string(),
                registry: self.image.registry().to_string(),
                err: Box::new(err),
            }),
        }
    }

    /// GET with authentication handling; returns only 2xx responses.
    fn get(
        &mut self,
        url: &str,
        accept: Option<&str>,
        what: &str,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let resp = self.exchange(Method::GET, url, accept, None, &SendData::Empty)?;
        self.success(resp, url, what)
    }

    /// Sends one request with authentication handling (a 401 is answered once, then
    /// reported); returns the response whatever its other status.
    pub(crate) fn exchange(
        &mut self,
        method: Method,
        url: &str,
        accept: Option<&str>,
        content_type: Option<&str>,
        data: &SendData<'_>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        self.exchange_with(method, url, accept, content_type, None, data)
    }

    /// As [`RegistryClient::exchange`], with a `Range` header when `range` is given.
    fn exchange_with(
        &mut self,
        method: Method,
        url: &str,
        accept: Option<&str>,
        content_type: Option<&str>,
        range: Option<&str>,
        data: &SendData<'_>,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        for attempt in 0..2 {
            let mut req = ureq::http::Request::builder()
                .method(method.clone())
                .uri(url);
            if let Some(a) = accept {
                req = req.header("Accept", a);
            }
            if let Some(c) = content_type {
                req = req.header("Content-Type", c);
            }
            if let Some(r) = range {
                req = req.header("Range", r);
            }
            match (&self.auth, &self.options.credentials) {
                (Authorization::Basic, Some((c, _))) => {
                    req = req.header("Authorization", c.basic_header())
                }
                (Authorization::Bearer(t), _) => {
                    req = req.header("Authorization", format!("Bearer {t}"))
                }
                _ => {}
            }
            let sent = match data {
                SendData::Empty => self.agent.run(with_body(req, (), url)?),
                SendData::Bytes(b) => self.agent.run(with_body(req, *b, url)?),
                SendData::File(path, label) => {
                    let local = |err| RegistryError::Local {
                        path: path.to_path_buf(),
                        err,
                    };
                    let file = std::fs::File::open(path).map_err(local)?;
                    let len = file.metadata().map_err(local)?.len();
                    // A reader body is sent chunked unless the length is given: registries
                    // want Content-Length for a monolithic upload. The bar counts what is
                    // read from the file (on a terminal; nothing otherwise).
                    req = req.header("Content-Length", len);
                    let progress = crate::progress::Progress::bytes(label, Some(len));
                    let mut reader = progress.reader(file);
                    self.agent.run(with_body(
                        req,
                        ureq::SendBody::from_reader(&mut reader),
                        url,
                    )?)
                }
            };
            let mut resp = sent.map_err(|err| self.connect_error(url, err))?;
            if resp.status() == StatusCode::UNAUTHORIZED {
                if attempt == 0 {
                    let challenges: Vec<Challenge> = resp
                        .headers()
                        .get_all("www-authenticate")
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .flat_map(parse_challenges)
                        .collect();
                    // Drain the body so the connection can be reused.
                    let _ = registry_message(&mut resp);
                    self.authenticate(&challenges)?;
                    continue;
                }
                return Err(self.unauthorized());
            }
            return Ok(resp);
        }
        Err(self.unauthorized())
    }

    /// A 2xx response as it is; any other status as the error it means.
    pub(crate) fn success(
        &self,
        mut resp: Response<ureq::Body>,
        url: &str,
        what: &str,
    ) -> Result<Response<ureq::Body>, RegistryError> {
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let message = registry_message(&mut resp);
        let registry = self.image.registry().to_string();
        Err(match status {
            StatusCode::NOT_FOUND => RegistryError::NotFound {
                what: what.to_string(),
                registry,
                message,
            },
            StatusCode::FORBIDDEN => RegistryError::Denied {
                registry,
                image: self.image.to_string(),
                message,
            },
            StatusCode::TOO_MANY_REQUESTS => RegistryError::RateLimited { registry, message },
            s => RegistryError::Status {
                registry,
                status: s.as_u16(),
                url: url.to_string(),
                message,
            },
        })
    }

    fn unauthorized(&self) -> RegistryError {
        match &self.options.credentials {
            Some((c, origin)) => RegistryError::CredentialsRejected {
                registry: self.image.registry().to_string(),
                user: c.username.clone(),
                origin: origin.clone(),
                image: self.image.to_string(),
            },
            None => RegistryError::AuthRequired {
                registry: self.image.registry().to_string(),
                image: self.image.to_string(),
            },
        }
    }

    /// Answers a 401: a Bearer challenge gets a token, a Basic one the credentials.
    fn authenticate(&mut self, challenges: &[Challenge]) -> Result<(), RegistryError> {
        let bearer = challenges.iter().find_map(|c| match c {
            Challenge::Bearer {
                realm,
                service,
                scope,
            } => Some((realm, service, scope)),
            _ => None,
        });
        if let Some((realm, service, scope)) = bearer {
            let token = self.fetch_token(realm, service.as_deref(), scope.as_deref())?;
            self.auth = Authorization::Bearer(token);
            return Ok(());
        }
        if challenges.contains(&Challenge::Basic) {
            if self.options.credentials.is_none() {
                return Err(self.unauthorized());
            }
            self.auth = Authorization::Basic;
            return Ok(());
        }
        if challenges.is_empty() {
            return Err(self.unauthorized());
        }
        let schemes: Vec<String> = challenges
            .iter()
            .map(|c| match c {
                Challenge::Other(s) => s.clone(),
                other => format!("{other:?}"),
            })
            .collect();
        Err(RegistryError::UnsupportedAuth {
            registry: self.image.registry().to_string(),
            schemes: schemes.join(", "),
            image: self.image.to_string(),
        })
    }

    fn fetch_token(
        &mut self,
        realm: &str,
        service: Option<&str>,
        scope: Option<&str>,
    ) -> Result<String, RegistryError> {
        #[derive(serde::Deserialize)]
        struct TokenResponse {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let registry = self.image.registry().to_string();
        let bad = |detail: String| RegistryError::BadToken {
            realm: realm.to_string(),
            registry: registry.clone(),
            detail,
        };
        // Our own pull scope is always asked for; a different scope from the challenge
        // (some registries name the repository differently) is added, not substituted.
        let actions = if self.push { "pull,push" } else { "pull" };
        let ours = format!("repository:{}:{actions}", self.image.repository());
        let mut req = self.agent.get(realm);
        if let Some(s) = service {
            req = req.query("service", s);
        }
        if !self.login_check {
            req = req.query("scope", &ours);
        }
        if let Some(s) = scope.filter(|s| *s != ours) {
            req = req.query("scope", s);
        }
        if let Some((c, _)) = &self.options.credentials {
            req = req.header("Authorization", c.basic_header());
        }
        let mut resp = req.call().map_err(|err| self.connect_error(realm, err))?;
        let status = resp.status();
        if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            return Err(self.unauthorized());
        }
        if !status.is_success() {
            let message = registry_message(&mut resp);
            return Err(bad(format!("HTTP {}{message}", status.as_u16())));
        }
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_TOKEN_BYTES)
            .read_to_vec()
            .map_err(|e| bad(e.to_string()))?;
        let parsed: TokenResponse =
            serde_json::from_slice(&body).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        parsed
            .token
            .or(parsed.access_token)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("the response has no token".into()))
    }

    fn connect_error(&self, url: &str, err: ureq::Error) -> RegistryError {
        // A plain-HTTP server answering a TLS handshake shows up as a TLS error or as an
        // I/O error wrapping rustls' "corrupt message"; either way HTTP may be the cure.
        let text = err.to_string().to_ascii_lowercase();
        let tls = matches!(
            err,
            ureq::Error::Tls(_) | ureq::Error::Rustls(_) | ureq::Error::Pem(_)
        ) || text.contains("tls")
            || text.contains("corrupt message")
            || text.contains("invalidcontenttype");
        let hint = if tls && !self.options.plain_http {
            " (if this registry speaks plain HTTP, use --no-https)"
        } else {
            ""
        };
        RegistryError::Connect {
            url: url.to_string(),
            err: Box::new(err),
            hint,
        }
    }
}

/// The request `req` describes, with `body`.
fn with_body<T>(
    req: ureq::http::request::Builder,
    body: T,
    url: &str,
) -> Result<ureq::http::Request<T>, RegistryError> {
    req.body(body).map_err(|e| RegistryError::Request {
        url: url.to_string(),
        detail: e.to_string(),
    })
}

/// Checks bytes fetched for a descriptor against its size and digest.
fn verify_bytes(bytes: &[u8], d: &Descriptor, what: &str) -> Result<(), Mismatch> {
    if bytes.len() as u64 != d.size {
        return Err(Mismatch::Size {
            what: what.to_string(),
            expected: d.size,
            actual: bytes.len() as u64,
        });
    }
    let actual = d.digest.same_algorithm_of(bytes);
    if actual != d.digest {
        return Err(Mismatch::Digest {
            what: what.to_string(),
            expected: d.digest.clone(),
            actual,
        });
    }
    Ok(())
}

/// The registry's own explanation from an error body (`{"errors":[{"code","message"}]}`),
/// as `: CODE: message`, or nothing.
fn registry_message(resp: &mut Response<ureq::Body>) -> String {
    #[derive(serde::Deserialize)]
    struct Errors {
        #[serde(default)]
        errors: Vec<ErrorItem>,
    }
    #[derive(serde::Deserialize)]
    struct ErrorItem {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let Ok(body) = resp
        .body_mut()
        .with_config()
        .limit(MAX_ERROR_BYTES)
        .read_to_vec()
    else {
        return String::new();
    };
    let Ok(parsed) = serde_json::from_slice::<Errors>(&body) else {
        return String::new();
    };
    let parts: Vec<String> = parsed
        .errors
        .iter()
        .map(|e| {
            let msg: String = e
                .message
                .chars()
                .filter(|c| !c.is_control())
                .take(200)
                .collect();
            match (e.code.is_empty(), msg.is_empty()) {
                (false, false) => format!("{}: {msg}", e.code),
                (false, true) => e.code.clone(),
                _ => msg,
            }
        })
        .filter(|s| !s.is_empty())
        .collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(": {}", parts.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::oci::spec::{OCI_CONFIG, OCI_INDEX, OCI_MANIFEST};
    use std::collections::HashMap;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::sync::{Arc, Mutex};

    /// One request as the fake registry saw it.
    #[derive(Debug, Clone)]
    struct Seen {
        path: String,
        headers: HashMap<String, String>,
    }

    type Reply = (u16, Vec<(String, String)>, Vec<u8>);
    type Handler = dyn Fn(&Seen, &str) -> Reply + Send + Sync;

    /// A loopback HTTP server answering each request with `handler(request, base_url)`, one
    /// request per connection. Returns the base URL and the log of requests.
    fn serve(handler: Box<Handler>) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("127.0.0.1:{}", listener.local_addr().expect("addr").port());
        let log = Arc::new(Mutex::new(Vec::new()));
        let (log2, base2) = (log.clone(), base.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut stream) = conn else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let seen = Seen { path, headers };
                log2.lock().expect("lock").push(seen.clone());
                let (status, hdrs, body) = handler(&seen, &base2);
                let mut out = format!(
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n",
                    body.len()
                );
                for (k, v) in hdrs {
                    out.push_str(&format!("{k}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let _ = stream.write_all(out.as_bytes());
                let _ = stream.write_all(&body);
            }
        });
        (base, log)
    }

    fn image(base: &str) -> ImageRef {
        ImageRef::parse(&format!("{base}/test/img:v1")).expect("ref")
    }

    fn options(creds: Option<(&str, &str)>) -> FetchOptions {
        FetchOptions {
            plain_http: true,
            credentials: creds.map(|(u, p)| {
                (
                    Credentials {
                        username: u.into(),
                        password: p.into(),
                    },
                    CredentialOrigin::CommandLine,
                )
            }),
            platform: PlatformSpec::from_arch("amd64").expect("amd64"),
        }
    }

    /// A small image: config, one layer, its manifest, and an index for two platforms
    /// (the arm64 entry points at a manifest that does not exist).
    struct Blobs {
        config: Vec<u8>,
        layer: Vec<u8>,
        manifest: Vec<u8>,
        index: Vec<u8>,
    }

    fn blobs() -> Blobs {
        let config = br#"{"architecture":"amd64","os":"linux","config":{"Cmd":["sh"]}}"#.to_vec();
        let layer = b"not really a tar, but bytes with a digest".to_vec();
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}",
               "config":{{"mediaType":"{OCI_CONFIG}","digest":"{}","size":{}}},
               "layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{}","size":{}}}]}}"#,
            Digest::sha256_of(&config),
            config.len(),
            Digest::sha256_of(&layer),
            layer.len()
        )
        .into_bytes();
        let index = format!(
            r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[
               {{"mediaType":"{OCI_MANIFEST}","digest":"sha256:{}","size":10,"platform":{{"os":"linux","architecture":"arm64"}}}},
               {{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#,
            "0".repeat(64),
            Digest::sha256_of(&manifest),
            manifest.len()
        )
        .into_bytes();
        Blobs {
            config,
            layer,
            manifest,
            index,
        }
    }

    /// Serves `b` under /v2/test/img/; `authorized(request)` decides access.
    fn registry_handler(
        b: Blobs,
        authorized: impl Fn(&Seen) -> Option<Reply> + Send + Sync + 'static,
    ) -> Box<Handler> {
        let by_digest: HashMap<String, (Vec<u8>, &'static str)> = [
            (
                Digest::sha256_of(&b.config).to_string(),
                (b.config.clone(), OCI_CONFIG),
            ),
            (
                Digest::sha256_of(&b.layer).to_string(),
                (b.layer.clone(), "application/octet-stream"),
            ),
            (
                Digest::sha256_of(&b.manifest).to_string(),
                (b.manifest.clone(), OCI_MANIFEST),
            ),
            (
                Digest::sha256_of(&b.index).to_string(),
                (b.index.clone(), OCI_INDEX),
            ),
        ]
        .into_iter()
        .collect();
        Box::new(move |req, _base| {
            if let Some(denied) = authorized(req) {
                return denied;
            }
            let not_found = (
                404,
                vec![],
                br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown"}]}"#
                    .to_vec(),
            );
            let Some(rest) = req.path.strip_prefix("/v2/test/img/") else {
                return not_found;
            };
            let key = rest.rsplit('/').next().unwrap_or("");
            let key = if key == "v1" {
                Digest::sha256_of(&b.index).to_string()
            } else {
                key.to_string()
            };
            match by_digest.get(&key) {
                Some((body, ct)) => (
                    200,
                    vec![("Content-Type".into(), (*ct).into())],
                    body.clone(),
                ),
                None => not_found,
            }
        })
    }

    #[test]
    fn test_anonymous_pull_follows_index_to_platform() {
        let b = blobs();
        let (layer, config) = (b.layer.clone(), b.config.clone());
        let (base, log) = serve(registry_handler(b, |_| None));
        let mut client = RegistryClient::new(&image(&base), options(None));
        let resolved = client.resolve().expect("resolve");
        assert_eq!(resolved.manifest.layers.len(), 1);
        assert_eq!(client.fetch_config(&resolved).expect("config"), config);
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(dir.path()).expect("cache");
        let p = client
            .download_blob(&resolved.manifest.layers[0], &cache)
            .expect("layer");
        assert_eq!(std::fs::read(p).expect("read"), layer);
        // A second download is served from the cache: no new request.
        let before = log.lock().expect("lock").len();
        client
            .download_blob(&resolved.manifest.layers[0], &cache)
            .expect("cached");
        assert_eq!(log.lock().expect("lock").len(), before);
        let first = log.lock().expect("lock")[0].clone();
        assert!(first.headers["accept"].contains(OCI_INDEX));
        assert!(!first.headers.contains_key("authorization"));
    }

    #[test]
    fn test_bearer_token_flow() {
        let b = blobs();
        let handler = registry_handler(b, |req| {
            if req.path.starts_with("/token") {
                let good = Credentials {
                    username: "alice".into(),
                    password: "secret".into(),
                }
                .basic_header();
                let ok = req.headers.get("authorization") == Some(&good)
                    && req.path.contains("scope=repository%3Atest%2Fimg%3Apull")
                    && req.path.contains("service=fake");
                return Some(if ok {
                    (200, vec![], br#"{"token":"tok123"}"#.to_vec())
                } else {
                    (401, vec![], b"{}".to_vec())
                });
            }
            if req.headers.get("authorization").map(String::as_str) == Some("Bearer tok123") {
                return None;
            }
            Some((
                401,
                vec![(
                    "WWW-Authenticate".into(),
                    format!(
                        r#"Bearer realm="http://{}/token",service="fake",scope="repository:test/img:pull""#,
                        req.headers.get("host").cloned().unwrap_or_default()
                    ),
                )],
                vec![],
            ))
        });
        let (base, log) = serve(handler);
        let mut client = RegistryClient::new(&image(&base), options(Some(("alice", "secret"))));
        let resolved = client.resolve().expect("resolve with a token");
        client
            .fetch_config(&resolved)
            .expect("config with the same token");
        let tokens = log
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path.starts_with("/token"))
            .count();
        assert_eq!(tokens, 1, "the token is reused");

        let mut wrong = RegistryClient::new(&image(&base), options(Some(("alice", "nope"))));
        let err = wrong.resolve().expect_err("rejected");
        assert!(
            matches!(err, RegistryError::CredentialsRejected { .. }),
            "{err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("alice") && msg.contains("rejected"), "{msg}");
        assert!(
            !msg.contains("nope"),
            "the password must not be shown: {msg}"
        );
    }

    #[test]
    fn test_basic_auth_flow() {
        let b = blobs();
        let good = Credentials {
            username: "bob".into(),
            password: "pw".into(),
        }
        .basic_header();
        let handler = registry_handler(b, move |req| {
            (req.headers.get("authorization") != Some(&good)).then(|| {
                (
                    401,
                    vec![(
                        "WWW-Authenticate".into(),
                        r#"Basic realm="basic-realm""#.into(),
                    )],
                    vec![],
                )
            })
        });
        let (base, _) = serve(handler);
        let mut ok = RegistryClient::new(&image(&base), options(Some(("bob", "pw"))));
        ok.resolve().expect("basic auth");
        let mut anonymous = RegistryClient::new(&image(&base), options(None));
        assert!(matches!(
            anonymous.resolve(),
            Err(RegistryError::AuthRequired { .. })
        ));
        let mut wrong = RegistryClient::new(&image(&base), options(Some(("bob", "x"))));
        assert!(matches!(
            wrong.resolve(),
            Err(RegistryError::CredentialsRejected { .. })
        ));
    }

    /// A login is checked at `/v2/`: Basic credentials there, Bearer ones at the token
    /// server, asked without a repository scope.
    #[test]
    fn test_check_login() {
        let good = Credentials {
            username: "carol".into(),
            password: "pw".into(),
        }
        .basic_header();
        let (base, _) = serve(Box::new(move |req, _| {
            if req.path != "/v2/" {
                return (404, vec![], vec![]);
            }
            if req.headers.get("authorization") == Some(&good) {
                return (200, vec![], b"{}".to_vec());
            }
            let basic = (
                "WWW-Authenticate".to_string(),
                "Basic realm=\"r\"".to_string(),
            );
            (401, vec![basic], vec![])
        }));
        let login = |u: &str, p: &str| {
            let mut c = RegistryClient::new(&image(&base), options(Some((u, p))));
            c.check_login()
        };
        login("carol", "pw").expect("good basic login");
        assert!(matches!(
            login("carol", "bad"),
            Err(RegistryError::CredentialsRejected { .. })
        ));

        let good = Credentials {
            username: "dan".into(),
            password: "pw".into(),
        }
        .basic_header();
        let (base, log) = serve(Box::new(move |req, base| {
            if req.path.starts_with("/token") {
                let ok = req.headers.get("authorization") == Some(&good);
                return if ok {
                    (200, vec![], br#"{"token":"t1"}"#.to_vec())
                } else {
                    (401, vec![], b"{}".to_vec())
                };
            }
            if req.headers.get("authorization").map(String::as_str) == Some("Bearer t1") {
                return (200, vec![], b"{}".to_vec());
            }
            let realm = format!("Bearer realm=\"http://{base}/token\",service=\"s\"");
            (401, vec![("WWW-Authenticate".to_string(), realm)], vec![])
        }));
        let login = |u: &str, p: &str| {
            let mut c = RegistryClient::new(&image(&base), options(Some((u, p))));
            c.check_login()
        };
        login("dan", "pw").expect("good bearer login");
        assert!(matches!(
            login("dan", "bad"),
            Err(RegistryError::CredentialsRejected { .. })
        ));
        let token_paths: Vec<String> = log
            .lock()
            .expect("lock")
            .iter()
            .filter(|s| s.path.starts_with("/token"))
            .map(|s| s.path.clone())
            .collect();
        assert!(!token_paths.is_empty());
        assert!(
            token_paths.iter().all(|p| !p.contains("scope=")),
            "{token_paths:?}"
        );
    }

    #[test]
    fn test_errors_are_clear() {
        let b = blobs();
        let (base, _) = serve(registry_handler(b, |_| None));
        let missing = ImageRef::parse(&format!("{base}/test/img:nope")).expect("ref");
        let err = RegistryClient::new(&missing, options(None))
            .resolve()
            .expect_err("404");
        let msg = err.to_string();
        assert!(matches!(err, RegistryError::NotFound { .. }));
        assert!(
            msg.contains("MANIFEST_UNKNOWN") && msg.contains("test/img:nope"),
            "{msg}"
        );

        let mut arm = options(None);
        arm.platform = PlatformSpec::from_arch("s390x").expect("s390x");
        let err = RegistryClient::new(&image(&base), arm)
            .resolve()
            .expect_err("no platform");
        assert!(err.to_string().contains("linux/amd64"), "{err}");

        // Nothing listening: a connection error naming the URL.
        let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = closed.local_addr().expect("addr").port();
        drop(closed);
        let nobody = ImageRef::parse(&format!("127.0.0.1:{port}/x")).expect("ref");
        let err = RegistryClient::new(&nobody, options(None))
            .resolve()
            .expect_err("refused");
        assert!(matches!(err, RegistryError::Connect { .. }));
        assert!(
            err.to_string().contains(&format!("127.0.0.1:{port}")),
            "{err}"
        );
    }

    #[test]
    fn test_tampered_blobs_are_refused() {
        let b = blobs();
        let manifest = b.manifest.clone();
        let layer_digest = Digest::sha256_of(&b.layer).to_string();
        let inner = registry_handler(b, |_| None);
        let handler: Box<Handler> = Box::new(move |req, base| {
            if req.path.ends_with(&layer_digest) {
                return (200, vec![], b"evil bytes of another length!".to_vec());
            }
            inner(req, base)
        });
        let (base, _) = serve(handler);
        let mut client = RegistryClient::new(&image(&base), options(None));
        let resolved = client.resolve().expect("resolve");
        assert_eq!(resolved.bytes, manifest);
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = BlobCache::open(dir.path()).expect("cache");
        let err = client
            .download_blob(&resolved.manifest.layers[0], &cache)
            .expect_err("tampered");
        assert!(
            matches!(err, RegistryError::Cache(CacheError::Mismatch(_))),
            "{err}"
        );
        assert!(!cache.contains(&resolved.manifest.layers[0].digest, None));
    }

    #[test]
    fn test_pinned_digest_is_checked() {
        let b = blobs();
        let (base, _) = serve(registry_handler(b, |_| None));
        // Asking for a digest the server answers with other bytes: refused.
        let wrong =
            ImageRef::parse(&format!("{base}/test/img@sha256:{}", "1".repeat(64))).expect("ref");
        let inner_err = RegistryClient::new(&wrong, options(None))
            .resolve()
            .expect_err("404 or mismatch");
        assert!(
            matches!(inner_err, RegistryError::NotFound { .. }),
            "{inner_err}"
        );
        let good = blobs();
        let pinned = ImageRef::parse(&format!(
            "{base}/test/img@{}",
            Digest::sha256_of(&good.manifest)
        ))
        .expect("ref");
        let r = RegistryClient::new(&pinned, options(None))
            .resolve()
            .expect("pinned");
        assert_eq!(r.digest, Digest::sha256_of(&good.manifest));
    }

    /// A download kept from an earlier pull is continued or restarted by how the server
    /// answers the range request: 206 from the byte asked (continued), 200 (whole file),
    /// 416 or a 206 from another byte (asked again without a range), and kept bytes that are
    /// not the blob's fail the digest check and are dropped.
    #[test]
    fn test_partial_downloads_resume_or_restart() {
        let layer = blobs().layer;
        let layer_digest = Digest::sha256_of(&layer);
        let have = 10usize;
        let mode = Arc::new(Mutex::new("206"));
        let (m, body) = (mode.clone(), layer.clone());
        let handler: Box<Handler> = Box::new(move |req, _| {
            let range = req.headers.get("range").cloned();
            let whole = (200, vec![], body.clone());
            let Some(range) = range else { return whole };
            let from: usize = range
                .strip_prefix("bytes=")
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse().ok())
                .expect("a range from a byte on");
            let cr = |start: usize| {
                vec![(
                    "Content-Range".to_string(),
                    format!("bytes {start}-{}/{}", body.len() - 1, body.len()),
                )]
            };
            match *m.lock().expect("lock") {
                "206" => (206, cr(from), body[from..].to_vec()),
                "206-elsewhere" => (206, cr(0), body.clone()),
                "416" => (416, vec![], vec![]),
                _ => whole,
            }
        });
        let (base, log) = serve(handler);
        let d = Descriptor {
            media_type: "application/octet-stream".into(),
            digest: layer_digest.clone(),
            size: layer.len() as u64,
            urls: vec![],
            annotations: Default::default(),
            platform: None,
        };
        for (case, requests) in [("206", 1), ("200", 1), ("416", 2), ("206-elsewhere", 2)] {
            *mode.lock().expect("lock") = case;
            log.lock().expect("lock").clear();
            let dir = tempfile::tempdir().expect("tempdir");
            let cache = BlobCache::open(dir.path()).expect("cache");
            let blob = cache.blob_path(&layer_digest);
            let partial = blob.with_file_name(format!(".partial-{}", layer_digest.hex()));
            std::fs::write(&partial, &layer[..have]).expect("partial");
            let mut client = RegistryClient::new(&image(&base), options(None));
            let got = client.download_blob(&d, &cache).expect(case);
            assert_eq!(std::fs::read(&got).expect("read"), layer, "{case}");
            assert!(!partial.exists(), "{case}");
            let seen = log.lock().expect("lock").clone();
            assert_eq!(seen.len(), requests, "{case}: {seen:?}");
            assert_eq!(
                seen[0].headers.get("range").map(String::as_str),
                Some("bytes=10-"),
                "{case}"
            );
            assert!(
                seen[1..].iter().all(|s| !s.headers.contains_key("range")),
                "{case}: {seen:?}"
            );

            // Kept bytes that are not the blob's: the digest check fails, nothing stays.
            cache.remove(&layer_digest);
            std::fs::write(&partial, vec![b'x'; have]).expect("partial");
            *mode.lock().expect("lock") = "206";
            let err = client.download_blob(&d, &cache).expect_err("damaged");
            assert!(
                matches!(err, RegistryError::Cache(CacheError::Mismatch(_))),
                "{err}"
            );
            assert!(!partial.exists() && !blob.exists(), "{case}");
        }
    }
}
