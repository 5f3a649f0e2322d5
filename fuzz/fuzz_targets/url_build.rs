//! Upstream URL building on arbitrary paths, queries and links: for any
//! input the URL the daemon would send its token to stays under the API
//! root (same scheme, host and port, no user information, path under the
//! base path with no dot segment or encoded separator), or is refused.
#![no_main]
use ghcache::daemon::api_base::{ApiBase, ApiPath};

#[derive(arbitrary::Arbitrary, Debug)]
struct Input<'a> {
    path: &'a str,
    query: Vec<(&'a str, &'a str)>,
    link: &'a str,
}

libfuzzer_sys::fuzz_target!(|input: Input<'_>| {
    let base = ApiBase::parse("https://ghe.example:8443/api/v3").unwrap();
    let under = |url: &url::Url| {
        assert_eq!(url.scheme(), "https");
        assert_eq!(url.host_str(), Some("ghe.example"));
        assert_eq!(url.port_or_known_default(), Some(8443));
        assert!(url.username().is_empty() && url.password().is_none());
        let path = url.path();
        assert!(path == "/api/v3" || path.starts_with("/api/v3/"), "{url}");
        assert!(!path.split('/').any(|s| s == ".." || s == "."), "{url}");
        let lower = path.to_ascii_lowercase();
        assert!(!lower.contains("%2e") && !lower.contains("%2f") && !lower.contains("%5c"), "{url}");
    };
    if let Ok(path) = ApiPath::parse(input.path) {
        let query: Vec<(String, String)> = input
            .query
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Ok(url) = base.url_for(&path, &query) {
            under(&url);
            // The query is exactly the pairs given, in order.
            let back: Vec<(String, String)> = url.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
            assert_eq!(back, query);
        }
    }
    if let Ok(url) = base.check(input.link) {
        under(&url);
    }
});
