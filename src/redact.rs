//! Secrets out of URLs, before any text leaves groupd (log lines, `groupctl
//! status`, the persisted view).
//!
//! A master URL may carry a credential in two places: the userinfo
//! (`http://user:pass@m1`) and the query or fragment (`?token=…`,
//! `#access_token=…`, pre-signed `?X-Amz-Signature=…`). [`redact_url`] masks
//! both in any text, whether it is a bare URL, an error message quoting one,
//! or a `Debug` list of them: it works on text, not on parsed URLs, because
//! the URL inside an error text has no reliable end for a parser.

/// Words that make a query key secret when found anywhere in it, ignoring
/// case and percent-encoding (`token`, `access_token`, `X-Auth-Token`,
/// `api_key`, `client_secret`, `passwd`, `X-Amz-Signature`, `sig`, …).
/// Masking a harmless value by mistake costs nothing; missing one leaks.
const SECRET_KEY_WORDS: [&str; 10] = [
    "token",
    "pass",
    "pwd",
    "secret",
    "auth",
    "key",
    "sig",
    "credential",
    "session",
    "jwt",
];

/// What a masked secret becomes.
const MASK: &str = "***";

/// `s` with, in every URL in it, the `user:password@` replaced by `***@` and
/// the value of every secret-looking query or fragment parameter replaced by
/// `***`. Works on any text, parseable URL or not.
pub fn redact_url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let authority_end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || ends_url(c))
            .unwrap_or(tail.len());
        let (authority, tail) = tail.split_at(authority_end);
        match authority.rfind('@') {
            // Everything up to the last @: a password may hold @ or :.
            Some(at) => {
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        let url_end = tail.find(ends_url).unwrap_or(tail.len());
        // Punctuation of the sentence around the URL (`URL: HTTP 500`)
        // stays readable; at worst the last character of a secret shows.
        let url_end = tail[..url_end]
            .trim_end_matches([':', ',', '.', ')', ']'])
            .len();
        let (path_and_query, after) = tail.split_at(url_end);
        mask_parameters(path_and_query, &mut out);
        rest = after;
    }
    out.push_str(rest);
    out
}

/// Characters that cannot be part of a URL written out (RFC 3986 needs them
/// percent-encoded), so they end one inside a text: whitespace, quotes of a
/// `Debug` string, angle brackets, backticks of a message.
fn ends_url(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '<' | '>' | '`')
}

/// Copy `path_and_query` (what follows the authority) to `out`, masking the
/// values of secret parameters in its query and fragment.
fn mask_parameters(path_and_query: &str, out: &mut String) {
    let Some(start) = path_and_query.find(['?', '#']) else {
        out.push_str(path_and_query);
        return;
    };
    out.push_str(&path_and_query[..=start]);
    // Parameters are separated by & (or ; in old servers), and a # starts
    // the fragment, whose parameters (OAuth's implicit flow) count too.
    let mut rest = &path_and_query[start + 1..];
    loop {
        let end = rest.find(['&', ';', '#']).unwrap_or(rest.len());
        let param = &rest[..end];
        match param.split_once('=') {
            Some((key, _)) if is_secret_key(key) => {
                out.push_str(key);
                out.push('=');
                out.push_str(MASK);
            }
            _ => out.push_str(param),
        }
        if end == rest.len() {
            return;
        }
        // The separators are ASCII: one byte.
        out.push_str(&rest[end..=end]);
        rest = &rest[end + 1..];
    }
}

/// Whether a query key names a secret (see [`SECRET_KEY_WORDS`]).
fn is_secret_key(key: &str) -> bool {
    let key = percent_decode(key).to_ascii_lowercase();
    SECRET_KEY_WORDS.iter().any(|w| key.contains(w))
}

/// `%XX` sequences decoded (so `%74oken` is `token`); anything malformed
/// is kept as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0)) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_masked() {
        assert_eq!(
            redact_url("http://user:s3cret@m1:8080/v2/apps"),
            "http://***@m1:8080/v2/apps"
        );
        assert_eq!(redact_url("https://tok@m1"), "https://***@m1");
        assert_eq!(redact_url("http://u:p@ss:w@rd@m1:1/"), "http://***@m1:1/");
        // An @ in the path or query is not userinfo.
        assert_eq!(redact_url("http://m1/a@b?c=d@e"), "http://m1/a@b?c=d@e");
        assert_eq!(redact_url("no url here"), "no url here");
    }

    #[test]
    fn secret_query_values_are_masked_whatever_the_case_or_encoding() {
        assert_eq!(
            redact_url("http://m1:8080/v2/apps?token=abc"),
            "http://m1:8080/v2/apps?token=***"
        );
        assert_eq!(
            redact_url("https://m1/?a=1&ACCESS_TOKEN=x.y.z&b=2"),
            "https://m1/?a=1&ACCESS_TOKEN=***&b=2"
        );
        assert_eq!(
            redact_url("https://m1/x?Password=p%40ss;api_key=k;X-Amz-Signature=f00"),
            "https://m1/x?Password=***;api_key=***;X-Amz-Signature=***"
        );
        assert_eq!(
            redact_url("http://m1?secret=s&auth=a&key=k&signature=g"),
            "http://m1?secret=***&auth=***&key=***&signature=***"
        );
        assert_eq!(
            redact_url("http://m1/?%74oken=abc"),
            "http://m1/?%74oken=***"
        );
        // The fragment (OAuth implicit flow) too.
        assert_eq!(
            redact_url("https://m1/cb#state=1&access_token=abc"),
            "https://m1/cb#state=1&access_token=***"
        );
        // A value holding = or ? is masked whole.
        assert_eq!(redact_url("http://m1/?token=a=b?c"), "http://m1/?token=***");
    }

    #[test]
    fn harmless_parameters_and_paths_are_kept() {
        let url = "http://m1:8080/v2/events?event_type=status_update_event&event_type=app_terminated_event";
        assert_eq!(redact_url(url), url);
        assert_eq!(redact_url("http://m1/token=abc"), "http://m1/token=abc");
        assert_eq!(redact_url("http://m1/?flag&x=1"), "http://m1/?flag&x=1");
        assert_eq!(redact_url("http://m1/?"), "http://m1/?");
        assert_eq!(redact_url("http://m1/?&&"), "http://m1/?&&");
    }

    #[test]
    fn urls_inside_text_are_found_and_ended_properly() {
        assert_eq!(
            redact_url("a http://u:p@x/?token=1 and https://v:q@y?z=1&sig=2: HTTP 500"),
            "a http://***@x/?token=*** and https://***@y?z=1&sig=***: HTTP 500"
        );
        // Debug lists of URLs, with and without a space between them.
        assert_eq!(
            redact_url(r#"["http://m1/?token=a", "http://u:p@m2"]"#),
            r#"["http://m1/?token=***", "http://***@m2"]"#
        );
        assert_eq!(
            redact_url(r#"["http://m1/?token=a","http://u:p@m2"]"#),
            r#"["http://m1/?token=***","http://***@m2"]"#
        );
        assert_eq!(
            redact_url("<http://m/?token=t>\n`http://m/?token=t`"),
            "<http://m/?token=***>\n`http://m/?token=***`"
        );
    }

    #[test]
    fn nothing_secret_survives_in_mixed_text() {
        for secret in ["s3cr3tvalue", "p@ss:w0rd"] {
            let text = format!(
                "GET http://ops:{secret}@m1:8080/v2/apps?embed=apps.tasks&token={secret}#jwt={secret} failed"
            );
            let shown = redact_url(&text);
            assert!(!shown.contains(secret), "{shown}");
            assert!(shown.contains("embed=apps.tasks"), "{shown}");
        }
    }
}
