//! The configured GitHub API root, and the only way to make an upstream URL.
//!
//! The daemon's GitHub token is sent with every upstream request, so every
//! URL it is sent to must be GitHub's. Three kinds of URL reach the
//! upstream client, and each goes through one check here:
//!
//! - **A path a client gave** (`/github/<path>`, the `gh_api` tool, the
//!   path parts of the other tools): [`ApiPath::parse`] accepts printable
//!   ASCII segments only, refuses `.` and `..` segments, empty segments,
//!   backslashes, and any percent-escape that decodes to `.`, `/`, `\`,
//!   `%`, a control character or a byte that is not ASCII (so no
//!   `%2e%2e`, no `%2f`, no double encoding such as `%252e`, no overlong
//!   UTF-8 such as `%c0%ae`). [`ApiBase::url_for`] then joins it under the
//!   base path and checks the result again.
//! - **A URL GitHub gave** (`Link: <…>; rel="next"` while following
//!   pages, `Location` of a redirect): [`ApiBase::check`] parses it as a
//!   URL and compares the *parsed* parts: same scheme, same host, same
//!   port, no user information, and a path under the base path after the
//!   parser resolved its dot segments (and with no encoded `/`, `\` or
//!   `.` left in it). Comparing strings would let
//!   `https://api.github.com@evil.example/` or
//!   `https://api.github.com.evil.example/` through.
//!
//! What is absent: no upstream URL is made by concatenating strings
//! outside this module, and no URL that fails a check is ever requested.

use std::fmt;

use url::Url;

/// Why a URL or path was refused (no request was made).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refused(pub String);

impl fmt::Display for Refused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Longest path accepted from a client (GitHub's own paths are far shorter).
pub const MAX_PATH_BYTES: usize = 1024;

/// A checked path below the API root: starts with `/`, segments of
/// printable ASCII with only harmless percent-escapes (module docs).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ApiPath(String);

impl ApiPath {
    /// Checks a path as a client gave it (a missing leading `/` is added).
    pub fn parse(raw: &str) -> Result<ApiPath, Refused> {
        let refuse = |why: &str| Err(Refused(format!("path {:?} refused: {why}", truncate(raw, 120))));
        let path = if raw.starts_with('/') {
            raw.to_string()
        } else {
            format!("/{raw}")
        };
        if raw.len() > MAX_PATH_BYTES {
            return refuse("longer than 1024 bytes");
        }
        if !path.bytes().all(|b| b.is_ascii_graphic()) {
            return refuse("only printable ASCII is allowed (no spaces, control characters or raw UTF-8)");
        }
        if path.contains(['?', '#']) {
            return refuse("a query or fragment belongs in the query, not the path");
        }
        if path.contains('\\') {
            return refuse("backslashes are not allowed");
        }
        if path.len() > 1 {
            for segment in path[1..].split('/') {
                match segment {
                    "" => return refuse("empty segments (`//`) are not allowed"),
                    "." | ".." => return refuse("dot segments are not allowed"),
                    _ => {}
                }
                if let Err(why) = check_escapes(segment) {
                    return refuse(&why);
                }
            }
        }
        Ok(ApiPath(path))
    }

    /// The path text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path text, owned.
    pub fn into_string(self) -> String {
        self.0
    }
}

/// Every `%XX` in `segment` must be well formed and decode to a byte that
/// cannot change the path's meaning (module docs).
fn check_escapes(segment: &str) -> Result<(), String> {
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                None => return Err("a `%` must start a two-digit escape".into()),
                Some(b'.' | b'/' | b'\\' | b'%') => {
                    return Err("encoded `.`, `/`, `\\` or `%` are not allowed".into());
                }
                Some(b) if !b.is_ascii() || b.is_ascii_control() => {
                    return Err("escapes must encode printable ASCII".into());
                }
                Some(_) => i += 3,
            }
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn truncate(s: &str, n: usize) -> &str {
    let mut end = n.min(s.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The GitHub API root: scheme, host, port and base path (e.g.
/// `https://api.github.com` or `https://ghe.example/api/v3`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiBase {
    url: Url,
    /// The base path without a trailing slash (`""` for a root base).
    path: String,
}

impl ApiBase {
    /// Parses the configured root: http(s), a host, no user information,
    /// query or fragment.
    pub fn parse(text: &str) -> Result<ApiBase, Refused> {
        let bad = |why: &str| {
            Refused(format!(
                "expected an http(s) URL like https://api.github.com, got {text:?}: {why}"
            ))
        };
        let url = Url::parse(text).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(bad("no host"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("user information is not allowed"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("a query or fragment is not allowed"));
        }
        let path = url.path().trim_end_matches('/').to_string();
        if path.contains(['%', '\\']) {
            return Err(bad("escapes are not allowed in the base path"));
        }
        Ok(ApiBase { url, path })
    }

    /// The root as text, without a trailing slash (for logs and for
    /// rewriting GitHub's absolute URLs).
    pub fn as_str(&self) -> &str {
        self.url.as_str().trim_end_matches('/')
    }

    /// The URL of `path` with `query` (pairs encoded here), checked.
    pub fn url_for(&self, path: &ApiPath, query: &[(String, String)]) -> Result<Url, Refused> {
        let mut text = format!("{}{}", self.origin_text(), self.path);
        text.push_str(path.as_str());
        if !query.is_empty() {
            text.push('?');
            text.push_str(&super::upstream::encode_query(query));
        }
        let url = Url::parse(&text).map_err(|e| Refused(format!("cannot build a URL for {}: {e}", path.as_str())))?;
        self.check_parsed(&url)?;
        // The parser must not have changed the path (it would if something
        // slipped past `ApiPath::parse`).
        if url.path() != format!("{}{}", self.path, path.as_str()) {
            return Err(Refused(format!("path {} does not stay as given", path.as_str())));
        }
        Ok(url)
    }

    /// Checks a URL GitHub sent (a `Link` target, a redirect's `Location`):
    /// parsed, it must be under this root (module docs).
    pub fn check(&self, text: &str) -> Result<Url, Refused> {
        let url = Url::parse(text).map_err(|e| Refused(format!("not a URL ({e})")))?;
        self.check_parsed(&url)?;
        Ok(url)
    }

    /// Is `url` under this root? Same scheme, host and port (after the
    /// parser's normalisation), no user information, path under the base
    /// path, no encoded `/`, `\`, `.` or `%` left in the path.
    pub fn check_parsed(&self, url: &Url) -> Result<(), Refused> {
        let off = |what: &str| {
            Err(Refused(format!(
                "{what}: {} is not under {}",
                redact(url),
                self.as_str()
            )))
        };
        if url.scheme() != self.url.scheme() {
            return off("another scheme");
        }
        if url.host() != self.url.host() {
            return off("another host");
        }
        if url.port_or_known_default() != self.url.port_or_known_default() {
            return off("another port");
        }
        if !url.username().is_empty() || url.password().is_some() {
            return off("user information");
        }
        let path = url.path();
        let under = path
            .strip_prefix(self.path.as_str())
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'));
        if !under {
            return off("another path");
        }
        if path.contains('\\') || path.split('/').any(|s| check_escapes(s).is_err()) {
            return off("an encoded separator or dot");
        }
        Ok(())
    }

    /// `scheme://host[:port]` of the root.
    fn origin_text(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// The path of `url` relative to the root, for messages (no host, no
    /// query: nothing that could carry a secret).
    pub fn relative<'a>(&self, url: &'a Url) -> &'a str {
        url.path().strip_prefix(self.path.as_str()).unwrap_or(url.path())
    }
}

/// A URL for a log or error message: scheme, host, port and path only.
fn redact(url: &Url) -> String {
    format!(
        "{}://{}{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default(),
        truncate(url.path(), 200)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str) -> ApiBase {
        ApiBase::parse(s).unwrap()
    }

    #[test]
    fn paths_that_could_leave_the_base_are_refused() {
        for bad in [
            "/../admin",
            "/repos/../../admin",
            "/./x",
            "/%2e%2e/admin",
            "/%2E%2e/%2e%2E/admin/secrets",
            "/repos%2f..%2fadmin",
            "/repos/%5c../x",
            "/a\\b",
            "/%252e%252e/x",
            "/%c0%ae%c0%ae/x",
            "/x%00",
            "/x%0d%0aHost:%20evil",
            "/x%",
            "/x%zz",
            "//evil.example/x",
            "/x//y",
            "/x?y=1",
            "/x#y",
            "/x y",
            "/é",
        ] {
            assert!(ApiPath::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = format!("/{}", "a".repeat(MAX_PATH_BYTES));
        assert!(ApiPath::parse(&long).is_err());
    }

    #[test]
    fn ordinary_paths_pass_and_build_under_the_base() {
        let b = base("http://ghe.example:8080/api/v3/");
        for (path, expected) in [
            ("/repos/o/r", "http://ghe.example:8080/api/v3/repos/o/r"),
            (
                "repos/o/r/contents/a%20b.md",
                "http://ghe.example:8080/api/v3/repos/o/r/contents/a%20b.md",
            ),
            ("/", "http://ghe.example:8080/api/v3/"),
            (
                "/repos/o/r.github.io",
                "http://ghe.example:8080/api/v3/repos/o/r.github.io",
            ),
        ] {
            let p = ApiPath::parse(path).unwrap();
            assert_eq!(b.url_for(&p, &[]).unwrap().as_str(), expected);
        }
        let q = vec![("state".to_string(), "all&x=1".to_string())];
        let url = b.url_for(&ApiPath::parse("/x").unwrap(), &q).unwrap();
        assert_eq!(url.query(), Some("state=all%26x%3D1"));
    }

    #[test]
    fn links_off_the_base_are_refused() {
        let b = base("https://api.github.com");
        assert!(b.check("https://api.github.com/repos/o/r/issues?page=2").is_ok());
        assert!(b.check("https://API.github.com:443/x").is_ok());
        for bad in [
            "https://api.github.com@evil.example/x",
            "https://user:pw@api.github.com/x",
            "https://api.github.com.evil.example/x",
            "https://api.github.com:444/x",
            "http://api.github.com/x",
            "//evil.example/x",
            "/x",
            "https://evil.example/api.github.com/x",
            "javascript:alert(1)",
            "https://api.github.com/%2f%2fevil/x",
            "https://api.github.com/x%5c..",
        ] {
            assert!(b.check(bad).is_err(), "{bad:?} accepted");
        }
        let ghe = base("http://127.0.0.1:9/api/v3");
        assert!(ghe.check("http://127.0.0.1:9/api/v3/x").is_ok());
        for bad in [
            "http://127.0.0.1:9/api/v3/../../admin",
            "http://127.0.0.1:9/api/v3/%2e%2e/%2e%2e/admin",
            "http://127.0.0.1:9/api/v30/x",
            "http://127.0.0.1:9/admin",
            "http://127.0.0.1:10/api/v3/x",
        ] {
            assert!(ghe.check(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bases() {
        assert_eq!(base("https://api.github.com/").as_str(), "https://api.github.com");
        assert_eq!(base("http://h:1/api/v3").as_str(), "http://h:1/api/v3");
        for bad in [
            "ftp://x",
            "https://",
            "https://u@h",
            "https://h/?q",
            "https://h/#f",
            "api.github.com",
            "https://h/a%2e",
        ] {
            assert!(ApiBase::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
