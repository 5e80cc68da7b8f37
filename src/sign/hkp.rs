//! An HKP keyserver client (draft-shaw-openpgp-hkp): search (`op=index`, machine-readable),
//! fetch (`op=get`) and submit (`POST /pks/add`), and the search listing as Apptainer prints
//! it (`formatMROutput` in its `sypgp` package).

use std::time::Duration;

use base64::Engine as _;
use pgp::composed::SignedPublicKey;

use super::pgp as sifr_pgp;

/// Largest reply read from a keyserver.
const MAX_REPLY_BYTES: u64 = 16 * 1024 * 1024;

/// Why a keyserver request failed.
#[derive(Debug, thiserror::Error)]
pub enum HkpError {
    #[error("{url}: not a keyserver URL (give http://HOST[:PORT] or https://HOST[:PORT])")]
    BadUrl { url: String },
    #[error("{method} {url}: {cause}")]
    Transport {
        method: &'static str,
        url: String,
        cause: String,
    },
    #[error("unauthorized or missing token ({url}); log in with 'keyserver login'")]
    Unauthorized { url: String },
    #[error("no matching keys found for fingerprint ({url}: 404 Not Found)")]
    NotFound { url: String },
    #[error("{method} {url}: the keyserver answered {status}{detail}")]
    Status {
        method: &'static str,
        url: String,
        status: u16,
        detail: String,
    },
    #[error("{url}: {why}")]
    Reply { url: String, why: String },
}

/// One keyserver: its base URL and how to reach it.
pub struct HkpClient {
    base: String,
    agent: ureq::Agent,
    basic_auth: Option<String>,
}

/// Percent-encodes a query value (RFC 3986 unreserved characters kept).
fn query_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Decodes `%XX` sequences (Go's `url.QueryUnescape`, `+` as space); `None` when malformed.
fn query_unescape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(h, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The base URL of a keyserver: `http(s)://host[:port][/path]`, `hkp://` meaning
/// `http://` on port 11371 and `hkps://` meaning `https://`; no trailing slash.
pub fn normalize_url(url: &str) -> Result<String, HkpError> {
    let bad = || HkpError::BadUrl {
        url: url.to_string(),
    };
    let u = url.trim();
    let (scheme, rest) = u.split_once("://").ok_or_else(bad)?;
    let rest = rest.trim_end_matches('/');
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty() || host.contains(['@', ' ', '?', '#']) {
        return Err(bad());
    }
    match scheme.to_ascii_lowercase().as_str() {
        "http" | "https" => Ok(format!("{}://{rest}", scheme.to_ascii_lowercase())),
        "hkps" => Ok(format!("https://{rest}")),
        "hkp" if host.contains(':') => Ok(format!("http://{rest}")),
        "hkp" => Ok(format!(
            "http://{host}:11371{}",
            &rest[host.len()..].trim_end_matches('/')
        )),
        _ => Err(bad()),
    }
}

impl HkpClient {
    /// A client for the keyserver at `url`; `insecure` skips TLS certificate checks;
    /// `credentials` (user, password) are sent as HTTP basic authentication.
    pub fn new(
        url: &str,
        insecure: bool,
        credentials: Option<(&str, &str)>,
    ) -> Result<HkpClient, HkpError> {
        let base = normalize_url(url)?;
        let tls = ureq::tls::TlsConfig::builder()
            .root_certs(ureq::tls::RootCerts::PlatformVerifier)
            .disable_verification(insecure)
            .build();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .redirect_auth_headers(ureq::config::RedirectAuthHeaders::SameHost)
            .user_agent(format!("sifr/{}", crate::compat::SIFR_VERSION))
            .timeout_connect(Some(Duration::from_secs(30)))
            .timeout_global(Some(Duration::from_secs(120)))
            .tls_config(tls)
            .build()
            .into();
        let basic_auth = credentials.map(|(u, p)| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
            )
        });
        Ok(HkpClient {
            base,
            agent,
            basic_auth,
        })
    }

    /// The keyserver's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn lookup_url(&self, op: &str, search: &str, extra: &str) -> String {
        format!(
            "{}/pks/lookup?op={op}&search={}{extra}",
            self.base,
            query_escape(search)
        )
    }

    /// Reads a reply body, mapping statuses to errors.
    fn reply(
        &self,
        method: &'static str,
        url: &str,
        r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<String, HkpError> {
        let mut resp = r.map_err(|e| HkpError::Transport {
            method,
            url: url.to_string(),
            cause: transport_cause(&e),
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_string()
            .map_err(|e| HkpError::Transport {
                method,
                url: url.to_string(),
                cause: format!("reading the reply: {e}"),
            });
        match status {
            200..=299 => body,
            401 => Err(HkpError::Unauthorized {
                url: url.to_string(),
            }),
            404 if method == "GET" => Err(HkpError::NotFound {
                url: url.to_string(),
            }),
            _ => {
                let text = body.unwrap_or_default();
                let detail = first_text_line(&text)
                    .map(|l| format!(" ({l})"))
                    .unwrap_or_default();
                Err(HkpError::Status {
                    method,
                    url: url.to_string(),
                    status,
                    detail,
                })
            }
        }
    }

    fn get(&self, url: &str) -> Result<String, HkpError> {
        let mut req = self.agent.get(url);
        if let Some(a) = &self.basic_auth {
            req = req.header("Authorization", a);
        }
        self.reply("GET", url, req.call())
    }

    /// `op=index` in machine-readable form: the raw listing. A search term of 8 or more
    /// upper-case hex digits is a key ID or fingerprint and is sent as `0x…` (as Apptainer).
    pub fn search(&self, query: &str) -> Result<String, HkpError> {
        let q = if query.len() >= 8
            && query
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_lowercase())
        {
            format!("0x{query}")
        } else {
            query.to_string()
        };
        let url = self.lookup_url("index", &q, "&fingerprint=on&options=mr");
        self.get(&url)
    }

    /// `op=get` for a fingerprint (40 hex digits) or a key ID (16 or 8): the keys returned.
    pub fn fetch(&self, id_hex: &str) -> Result<Vec<SignedPublicKey>, HkpError> {
        let url = self.lookup_url("get", &format!("0x{id_hex}"), "&exact=on&options=mr");
        let text = self.get(&url)?;
        let keys = sifr_pgp::parse_keys(text.as_bytes()).map_err(|why| HkpError::Reply {
            url: url.clone(),
            why: format!("the reply holds no readable key: {why}"),
        })?;
        if keys.is_empty() {
            return Err(HkpError::Reply {
                url,
                why: "no keys in keyring".into(),
            });
        }
        Ok(keys.iter().map(sifr_pgp::public_of).collect())
    }

    /// `POST /pks/add` with the armored public key; the server's reply text (may be empty).
    pub fn push(&self, armored: &str) -> Result<String, HkpError> {
        let url = format!("{}/pks/add", self.base);
        let mut req = self.agent.post(&url);
        if let Some(a) = &self.basic_auth {
            req = req.header("Authorization", a);
        }
        let body = format!("keytext={}", query_escape(armored));
        let r = req
            .header("Content-Type", "application/x-www-form-urlencoded")
            .send(body.as_bytes());
        let text = self.reply("POST", &url, r)?;
        Ok(first_text_line(&text).unwrap_or_default())
    }
}

/// A transport error in one line: the innermost cause (connection refused, unknown host...).
fn transport_cause(e: &ureq::Error) -> String {
    match e {
        ureq::Error::Io(io) => io.to_string(),
        ureq::Error::HostNotFound => "unknown host (name resolution failed)".into(),
        other => other.to_string(),
    }
}

/// The first line of text in a reply, HTML tags removed (keyservers answer errors in HTML).
fn first_text_line(body: &str) -> Option<String> {
    let mut plain = String::new();
    let mut in_tag = false;
    let body = match body.find("<body") {
        Some(i) => &body[i..],
        None => body,
    };
    for c in body.chars() {
        match c {
            '<' => {
                in_tag = true;
                plain.push('\n');
            }
            '>' => in_tag = false,
            c if !in_tag => plain.push(c),
            _ => {}
        }
    }
    plain
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(200).collect())
}

/// Go's `text/tabwriter` with minwidth 0, padding 2, space padding, no flags: a cell is
/// text ended by a tab; a column block is a run of consecutive lines that all have a cell in
/// that column; cells are padded to the block's widest cell plus 2. The text after a line's
/// last tab is not a cell and is written as is.
pub fn tabwrite(text: &str) -> String {
    let lines: Vec<Vec<&str>> = text.split('\n').map(|l| l.split('\t').collect()).collect();
    let cells = |i: usize| lines[i].len() - 1;
    let mut widths: Vec<Vec<usize>> = lines.iter().map(|l| vec![0; l.len() - 1]).collect();
    let max_cols = (0..lines.len()).map(cells).max().unwrap_or(0);
    for col in 0..max_cols {
        let mut i = 0;
        while i < lines.len() {
            if cells(i) <= col {
                i += 1;
                continue;
            }
            let start = i;
            while i < lines.len() && cells(i) > col {
                i += 1;
            }
            let w = (start..i)
                .map(|j| lines[j][col].chars().count() + 2)
                .max()
                .unwrap_or(0);
            for row in &mut widths[start..i] {
                row[col] = w;
            }
        }
    }
    let mut out = Vec::new();
    for (l, w) in lines.iter().zip(&widths) {
        let mut s = String::new();
        for (c, width) in l.iter().zip(w) {
            s.push_str(c);
            s.push_str(&" ".repeat(width - c.chars().count()));
        }
        s.push_str(l[l.len() - 1]);
        out.push(s);
    }
    out.join("\n")
}

/// The name of an OpenPGP public-key algorithm number (Apptainer's table).
fn algorithm_name(n: &str) -> Result<&'static str, String> {
    let code: i64 = n
        .parse()
        .map_err(|_| format!("strconv.ParseInt: parsing {n:?}: invalid syntax"))?;
    Ok(match code {
        1..=3 => "RSA",
        16 => "Elgamal",
        17 => "DSA",
        18 => "Elliptic Curve",
        19 => "ECDSA",
        20 => "Reserved",
        21 => "Diffie-Hellman",
        _ => "unknown",
    })
}

/// Go's `time.Unix(s, 0).String()` in the local time zone (as `key list` prints times).
fn date(s: &str) -> String {
    if s == "none" {
        return s.to_string();
    }
    match s.parse::<u32>() {
        Ok(secs) => super::keytext::local_time_text(secs),
        Err(_) => s.to_string(),
    }
}

/// The machine-readable index listing turned into Apptainer's table: the number of keys and
/// the text (a header, then one block per key, blank line between keys). Fails when the
/// `info:` line announces another count than the keys listed.
pub fn format_index(mr: &str, long: bool) -> Result<(usize, String), String> {
    let mut t = String::new();
    if long {
        t.push_str("FINGERPRINT\tALGORITHM\tBITS\tCREATION DATE\tEXPIRATION DATE\tSTATUS\t");
    } else {
        t.push_str("KEY ID\tBITS\t");
    }
    t.push_str("NAME/EMAIL\n");
    let (mut count, mut announced) = (0usize, 0usize);
    let (mut first, mut got_name) = (true, false);
    for line in mr.split('\n') {
        let l = format!("{}:::::::", line.trim());
        let f: Vec<&str> = l.trim().split(':').collect();
        match f[0] {
            "info" => {
                announced = f[2]
                    .parse()
                    .map_err(|_| "unable to check number of keys".to_string())?;
            }
            "pub" => {
                if !first {
                    if !got_name {
                        t.push('\n');
                    }
                    t.push('\n');
                }
                first = false;
                got_name = false;
                let (fp, bits) = (f[1], f[3]);
                if long {
                    let alg = algorithm_name(f[2])?;
                    let created = if f[4].is_empty() {
                        String::new()
                    } else {
                        date(f[4])
                    };
                    let expires = if f[5].is_empty() {
                        String::new()
                    } else {
                        date(f[5])
                    };
                    let status = if f[6].contains('r') {
                        "[revoked]"
                    } else if f[6].contains('d') {
                        "[disabled]"
                    } else if f[6].contains('e') {
                        "[expired]"
                    } else {
                        "[enabled]"
                    };
                    t.push_str(&format!(
                        "{fp}\t{alg}\t{bits}\t{created}\t{expires}\t{status}\t"
                    ));
                } else {
                    let short = if fp.len() > 8 {
                        &fp[fp.len() - 8..]
                    } else {
                        fp
                    };
                    t.push_str(&format!("{short}\t{bits}\t"));
                }
                count += 1;
            }
            "uid" => {
                if got_name {
                    t.push_str(if long { "\t\t\t\t\t\t" } else { "\t\t" });
                }
                got_name = true;
                let name = query_unescape(f[1]).unwrap_or_else(|| f[1].to_string());
                t.push_str(&name);
                t.push('\n');
            }
            _ => {}
        }
    }
    if count > 0 && !got_name {
        t.push('\n');
    }
    let text = tabwrite(&t);
    if announced > 0 && count != announced {
        return Err("failed to convert machine readable to human readable output correctly".into());
    }
    Ok((count, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_tabwriter_blocks_as_go() {
        // Two blocks split by the empty line: each aligned on its own.
        let t = tabwrite("KEY ID\tBITS\tNAME\nABCD1234\t4096\tA <a@x>\n\n12\t1\tB\n");
        assert_eq!(
            t,
            "KEY ID    BITS  NAME\nABCD1234  4096  A <a@x>\n\n12  1  B\n"
        );
    }

    #[test]
    fn test_format_index_short_and_long() {
        let mr = "info:1:2\npub:0123456789ABCDEF0123456789ABCDEF01234567:1:4096:1700000000::\nuid:Jane%20Doe%20%3Cjane%40x.org%3E:1700000000::\nuid:Jane%20Two:1700000000::\npub:FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF:22:256:1700000000::r\n";
        let (n, short) = format_index(mr, false).expect("formats");
        assert_eq!(n, 2);
        assert_eq!(
            short,
            "KEY ID    BITS  NAME/EMAIL\n01234567  4096  Jane Doe <jane@x.org>\n                Jane Two\n\nFFFFFFFF  256  \n"
        );
        let (_, long) = format_index(mr, true).expect("formats");
        let lines: Vec<&str> = long.lines().collect();
        assert!(lines[0].starts_with("FINGERPRINT  "), "{long}");
        assert!(
            lines[1].starts_with("0123456789ABCDEF0123456789ABCDEF01234567  RSA        4096  "),
            "{long}"
        );
        assert!(
            lines[1].ends_with("[enabled]  Jane Doe <jane@x.org>"),
            "{long}"
        );
        assert!(
            lines[4].contains("unknown") && lines[4].contains("[revoked]"),
            "{long}"
        );
    }

    #[test]
    fn test_format_index_count_mismatch_fails() {
        let mr = "info:1:3\npub:AB:1:1024:1::\nuid:x:1::\n";
        assert!(format_index(mr, false).is_err());
    }

    #[test]
    fn test_normalize_url() {
        assert_eq!(
            normalize_url("http://127.0.0.1:1234/").ok().as_deref(),
            Some("http://127.0.0.1:1234")
        );
        assert_eq!(
            normalize_url("hkp://keys.example.org").ok().as_deref(),
            Some("http://keys.example.org:11371")
        );
        assert_eq!(
            normalize_url("hkps://keys.example.org").ok().as_deref(),
            Some("https://keys.example.org")
        );
        assert!(normalize_url("keys.example.org").is_err());
        assert!(normalize_url("ftp://x").is_err());
        assert!(normalize_url("http://").is_err());
    }

    #[test]
    fn test_query_escape_round_trip() {
        let s = "Jane Doe <jane@x.org>\n+=&";
        assert_eq!(query_unescape(&query_escape(s)).as_deref(), Some(s));
        assert_eq!(query_unescape("%zz"), None);
    }

    #[test]
    fn test_first_text_line_strips_html() {
        let html =
            "<html><head><title>Error</title></head><body><h1>Not found</h1>No keys</body></html>";
        assert_eq!(first_text_line(html).as_deref(), Some("Not found"));
    }
}
