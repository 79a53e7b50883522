//! Reading what `tokio_postgres::Config` does not understand out of a connection string:
//! `sslmode=verify-ca`/`verify-full` (it knows only `disable`, `prefer` and `require`) and
//! `sslrootcert` (which it refuses as an unknown option). Both forms are read, a
//! `postgres://` URL (`?sslmode=verify-full&sslrootcert=/path/ca.crt`) and libpq's
//! `key=value` form (`host=db sslmode=verify-full sslrootcert='/path/ca.crt'`); the rest of
//! the string is handed to `Config` as it was written.

use std::borrow::Cow;

/// A connection string with the TLS parameters taken out.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Split {
    /// What is left, for `Config::from_str`.
    pub(super) rest: String,
    /// The last `sslmode` given, as written.
    pub(super) ssl_mode: Option<String>,
    /// The last `sslrootcert` given.
    pub(super) root_cert: Option<String>,
}

/// Takes `sslmode` and `sslrootcert` out of `s`. Errors never repeat `s` (it may hold a
/// password).
pub(super) fn split(s: &str) -> Result<Split, String> {
    match url_rest(s) {
        Some(_) => split_url(s),
        None => split_key_value(s),
    }
}

/// The part after `postgres://` or `postgresql://`, when `s` is a URL.
fn url_rest(s: &str) -> Option<&str> {
    s.strip_prefix("postgres://")
        .or_else(|| s.strip_prefix("postgresql://"))
}

fn split_url(s: &str) -> Result<Split, String> {
    // As tokio-postgres reads it: the credentials end at the first `@`, and the parameters
    // start at the first `?` after them.
    let after_scheme = s.len() - url_rest(s).map_or(0, str::len);
    let from = s[after_scheme..]
        .find('@')
        .map_or(after_scheme, |at| after_scheme + at);
    let Some(question) = s[from..].find('?').map(|q| from + q) else {
        return Ok(Split {
            rest: s.to_owned(),
            ssl_mode: None,
            root_cert: None,
        });
    };
    let mut out = Split {
        rest: s[..question].to_owned(),
        ssl_mode: None,
        root_cert: None,
    };
    let mut kept = Vec::new();
    for pair in s[question + 1..].split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match &*decode(key)? {
            "sslmode" => out.ssl_mode = Some(decode(value)?.into_owned()),
            "sslrootcert" => out.root_cert = Some(decode(value)?.into_owned()),
            _ => kept.push(pair),
        }
    }
    if !kept.is_empty() {
        out.rest.push('?');
        out.rest.push_str(&kept.join("&"));
    }
    Ok(out)
}

fn decode(s: &str) -> Result<Cow<'_, str>, String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map_err(|_| "a URL parameter is not valid UTF-8 once percent-decoded".to_owned())
}

/// libpq's `key = value` form, read with tokio-postgres' grammar: a value is `'quoted'` or
/// runs to the next whitespace, and `\` escapes the next character in both.
fn split_key_value(s: &str) -> Result<Split, String> {
    let mut out = Split {
        rest: String::new(),
        ssl_mode: None,
        root_cert: None,
    };
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut i = 0;
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].1.is_whitespace() {
            *i += 1;
        }
    };
    let at = |i: usize| chars.get(i).map_or(s.len(), |c| c.0);
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        let start = i;
        while i < chars.len() && !chars[i].1.is_whitespace() && chars[i].1 != '=' {
            i += 1;
        }
        let key = &s[at(start)..at(i)];
        skip_ws(&mut i);
        if chars.get(i).map(|c| c.1) != Some('=') {
            // Not ours to judge: tokio-postgres says what is wrong.
            return Ok(Split {
                rest: s.to_owned(),
                ssl_mode: None,
                root_cert: None,
            });
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if chars.get(i).map(|c| c.1) == Some('\'') {
            i += 1;
            loop {
                match chars.get(i).map(|c| c.1) {
                    None => return Err("unterminated quoted connection parameter value".into()),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        if let Some(&(_, c)) = chars.get(i + 1) {
                            value.push(c);
                        }
                        i += 2;
                    }
                    Some(c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].1.is_whitespace() {
                if chars[i].1 == '\\' {
                    if let Some(&(_, c)) = chars.get(i + 1) {
                        value.push(c);
                    }
                    i += 2;
                } else {
                    value.push(chars[i].1);
                    i += 1;
                }
            }
        }
        let i_end = i.min(chars.len());
        match key {
            "sslmode" => out.ssl_mode = Some(value),
            "sslrootcert" => out.root_cert = Some(value),
            _ => {
                if !out.rest.is_empty() {
                    out.rest.push(' ');
                }
                out.rest.push_str(&s[at(start)..at(i_end)]);
            }
        }
        i = i_end;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(s: &str) -> (String, Option<String>, Option<String>) {
        let split = split(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        (split.rest, split.ssl_mode, split.root_cert)
    }

    #[test]
    fn urls_lose_their_tls_parameters_and_keep_the_rest() {
        assert_eq!(
            parts("postgres://u:p@db:5432/app?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.crt&application_name=x"),
            (
                "postgres://u:p@db:5432/app?application_name=x".into(),
                Some("verify-full".into()),
                Some("/etc/ca.crt".into())
            )
        );
        assert_eq!(
            parts("postgresql://db/app?sslmode=require"),
            ("postgresql://db/app".into(), Some("require".into()), None)
        );
        assert_eq!(
            parts("postgres://db/app"),
            ("postgres://db/app".into(), None, None)
        );
        // A `?` in the (unencoded) password is not where the parameters start.
        assert_eq!(
            parts("postgres://u:pa?ss@db/app?sslmode=disable"),
            (
                "postgres://u:pa?ss@db/app".into(),
                Some("disable".into()),
                None
            )
        );
    }

    #[test]
    fn key_value_strings_lose_their_tls_parameters_and_keep_the_rest() {
        assert_eq!(
            parts(
                "host=db  sslmode = verify-ca user=u sslrootcert='/my certs/ca.crt' password='a b'"
            ),
            (
                "host=db user=u password='a b'".into(),
                Some("verify-ca".into()),
                Some("/my certs/ca.crt".into())
            )
        );
        assert_eq!(
            parts("host=db dbname=app"),
            ("host=db dbname=app".into(), None, None)
        );
        assert!(split("host=db sslrootcert='unterminated").is_err());
    }
}
