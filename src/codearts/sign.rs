//! AK/SK request signing, scheme `SDK-HMAC-SHA256` (reference section 2c).
//!
//! A pure function of the request parts, the credentials and the time, so it can be checked
//! against the vendor SDK's vectors.

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use sha2::{Digest, Sha256};

/// The scheme name, first word of the `Authorization` header.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// Header carrying the signing time.
pub const DATE_HEADER: &str = "X-Sdk-Date";
/// `strftime` format of [`DATE_HEADER`].
pub const DATE_FORMAT: &str = "%Y%m%dT%H%M%SZ";

/// RFC 3986: everything except `A-Z a-z 0-9 - _ . ~` is encoded.
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The parts of a request that the signature covers.
#[derive(Debug, Clone)]
pub struct RequestParts<'a> {
    /// HTTP method.
    pub method: &'a str,
    /// `host` or `host:port`, as in the `Host` header.
    pub host: &'a str,
    /// URL path as sent (may be percent-encoded).
    pub path: &'a str,
    /// Query pairs, decoded; a key may repeat.
    pub query: &'a [(String, String)],
    /// Headers of the request before signing.
    pub headers: &'a [(String, String)],
    /// Body bytes (empty when none).
    pub body: &'a [u8],
}

/// The signature and every intermediate, for the request and for tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Value of `X-Sdk-Date`.
    pub sdk_date: String,
    /// Lower-case signed header names joined by `;`.
    pub signed_headers: String,
    /// The six-line canonical request.
    pub canonical_request: String,
    /// The three-line string to sign.
    pub string_to_sign: String,
    /// Value of the `Authorization` header.
    pub authorization: String,
}

/// Signs `parts` with `ak`/`sk` at `sdk_date` (`YYYYMMDDTHHMMSSZ`). Adds `X-Sdk-Date` and,
/// when absent, `Host` to the signed headers, as the vendor's signer does.
pub fn sign(parts: &RequestParts<'_>, ak: &str, sk: &str, sdk_date: &str) -> Signature {
    let mut headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case(DATE_HEADER))
        .map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_string()))
        .collect();
    headers.push((DATE_HEADER.to_ascii_lowercase(), sdk_date.to_string()));
    if !headers.iter().any(|(name, _)| name == "host") {
        headers.push(("host".into(), parts.host.to_string()));
    }
    // Names with an underscore are left out: some proxies drop such headers.
    headers.retain(|(name, _)| !name.contains('_'));
    headers.sort();

    let signed_headers = headers
        .iter()
        .map(|(name, _)| name.as_str())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}:{value}\n"))
        .collect();
    let canonical_request = [
        parts.method.to_ascii_uppercase(),
        canonical_uri(parts.path),
        canonical_query(parts.query),
        canonical_headers,
        signed_headers.clone(),
        hex::encode(Sha256::digest(parts.body)),
    ]
    .join("\n");
    let string_to_sign = format!(
        "{ALGORITHM}\n{sdk_date}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let signature = hmac_hex(sk.as_bytes(), string_to_sign.as_bytes());
    let authorization =
        format!("{ALGORITHM} Access={ak}, SignedHeaders={signed_headers}, Signature={signature}");
    Signature {
        sdk_date: sdk_date.to_string(),
        signed_headers,
        canonical_request,
        string_to_sign,
        authorization,
    }
}

fn hmac_hex(key: &[u8], data: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

fn encode(text: &str) -> String {
    utf8_percent_encode(text, UNRESERVED).to_string()
}

/// Each path segment decoded then re-encoded; always ends in `/`.
fn canonical_uri(path: &str) -> String {
    let mut uri = path
        .split('/')
        .map(|segment| encode(&percent_decode_str(segment).decode_utf8_lossy()))
        .collect::<Vec<_>>()
        .join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// Pairs sorted by key then value as they are (decoded: encoding would move `é` before `z`),
/// then encoded and joined with `&`.
fn canonical_query(query: &[(String, String)]) -> String {
    let mut pairs: Vec<&(String, String)> = query.iter().collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn text<'a>(value: &'a Value, key: &str) -> &'a str {
        value[key]
            .as_str()
            .unwrap_or_else(|| panic!("{key} missing"))
    }

    #[test]
    fn every_vendor_vector_is_reproduced_exactly() {
        let vectors = crate::codearts::testing::signing_vectors();
        assert!(vectors.len() >= 5);
        for vector in &vectors {
            let name = text(vector, "name");
            let url = reqwest::Url::parse(text(vector, "url")).expect("url");
            let host = match url.port() {
                Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
                None => url.host_str().unwrap_or_default().to_string(),
            };
            let query: Vec<(String, String)> = vector["query_params"]
                .as_array()
                .expect("query_params")
                .iter()
                .flat_map(|pair| {
                    let key = pair[0].as_str().expect("key").to_string();
                    match &pair[1] {
                        Value::Array(values) => values
                            .iter()
                            .map(|v| (key.clone(), v.as_str().expect("value").to_string()))
                            .collect::<Vec<_>>(),
                        value => vec![(key, value.as_str().expect("value").to_string())],
                    }
                })
                .collect();
            let headers: Vec<(String, String)> = vector["headers"]
                .as_object()
                .expect("headers")
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().expect("header").to_string()))
                .collect();
            let expected = &vector["expected"];
            let parts = RequestParts {
                method: text(vector, "method"),
                host: &host,
                path: url.path(),
                query: &query,
                headers: &headers,
                body: text(vector, "body").as_bytes(),
            };
            let signed = sign(
                &parts,
                text(vector, "ak"),
                text(vector, "sk"),
                text(expected, "x_sdk_date"),
            );
            assert_eq!(
                signed.canonical_request,
                text(expected, "canonical_request"),
                "{name}"
            );
            assert_eq!(
                signed.signed_headers,
                text(expected, "signed_headers"),
                "{name}"
            );
            assert_eq!(
                signed.string_to_sign,
                text(expected, "string_to_sign"),
                "{name}"
            );
            assert_eq!(
                signed.authorization,
                text(expected, "authorization"),
                "{name}"
            );
        }
    }

    #[test]
    fn paths_and_queries_are_canonicalised() {
        assert_eq!(canonical_uri("/a b/%E6%B5%81/"), "/a%20b/%E6%B5%81/");
        assert_eq!(canonical_uri(""), "/");
        let query = [
            ("b".to_string(), "2".to_string()),
            ("a".to_string(), "x,y".to_string()),
            ("a".to_string(), "1".to_string()),
        ];
        assert_eq!(canonical_query(&query), "a=1&a=x%2Cy&b=2");
        // Sorted as decoded (reference §3.4, step 7): `étape` after `z` and `a:` after `a0`,
        // though encoded they sort the other way (`%C3…` before `z`, `a%3A` before `a0`).
        let query = [
            ("étape".to_string(), "1".to_string()),
            ("z".to_string(), "2".to_string()),
            ("a:".to_string(), "4".to_string()),
            ("a0".to_string(), "3".to_string()),
        ];
        assert_eq!(canonical_query(&query), "a0=3&a%3A=4&z=2&%C3%A9tape=1");
    }
}
