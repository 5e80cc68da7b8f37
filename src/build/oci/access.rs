//! How to reach registries, as library values (what `--no-https`, `--docker-username`,
//! `--docker-password` and `--authfile` say): the fetch options for one source, and getting
//! an image with them through the blob cache.

use std::path::PathBuf;

use super::{
    AuthError, BlobCache, CredentialQuery, Credentials, FetchOptions, OciError, OciImage,
    PlatformSpec, Source,
};

/// Registry access for OCI sources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryAccess {
    /// Plain HTTP instead of HTTPS (insecure registries).
    pub plain_http: bool,
    pub username: Option<String>,
    pub password: Option<String>,
    /// A docker `config.json`-style credentials file: when given, the only one consulted.
    pub authfile: Option<PathBuf>,
    /// Where downloaded blobs go instead of the user's cache (`--disable-cache`: a directory
    /// removed after the build).
    pub cache_root: Option<PathBuf>,
    /// The platform to pick from an image index (`--arch`); `None`: the host's.
    pub platform: Option<PlatformSpec>,
}

impl RegistryAccess {
    /// The fetch options for `source`: plain HTTP or not, and credentials for its registry
    /// from the explicit user name and password, the auth file, the environment or docker
    /// config files (see `oci::auth`).
    pub fn fetch_options(&self, source: &Source) -> Result<FetchOptions, AuthError> {
        let explicit = match (&self.username, &self.password) {
            (Some(u), Some(p)) => Some(Credentials {
                username: u.clone(),
                password: p.clone(),
            }),
            (Some(u), None) => {
                return Err(AuthError::UsernameWithoutPassword {
                    username: u.clone(),
                });
            }
            (None, Some(_)) => return Err(AuthError::PasswordWithoutUsername),
            (None, None) => None,
        };
        let credentials = match source {
            Source::Registry(r) => {
                let home = super::home_dir();
                CredentialQuery {
                    explicit: explicit.as_ref(),
                    authfile: self.authfile.as_deref(),
                    home: home.as_deref(),
                    env: &|k| std::env::var(k).ok(),
                }
                .find(r.registry(), r.repository())?
            }
            _ => None,
        };
        Ok(FetchOptions {
            plain_http: self.plain_http,
            credentials,
            platform: self.platform.clone().unwrap_or_else(PlatformSpec::host),
        })
    }

    /// Gets an OCI image as the calling user: a registry image is downloaded into the blob
    /// cache (blobs already there are reused); local layouts and archives are read in place.
    pub fn fetch(&self, source: &Source) -> Result<OciImage, OciError> {
        let options = self.fetch_options(source)?;
        let cache = match &self.cache_root {
            Some(root) => BlobCache::open(root)?,
            None => BlobCache::from_env()?,
        };
        log::debug!("fetching OCI image {source}");
        super::fetch(source, &cache, &options)
    }
}
