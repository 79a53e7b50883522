//! Normalized request hosts.
//!
//! ```
//! use tenant_schemas::Host;
//!
//! let host = Host::parse("Acme.Example.COM.:8080").unwrap();
//! assert_eq!(host.as_str(), "acme.example.com");
//! assert_eq!(host.subdomain_of(&Host::parse("example.com").unwrap()), Some("acme"));
//! assert!(Host::parse("acme..example.com").is_err());
//! assert!(Host::parse("[::1]:3000").unwrap().is_ip());
//! ```

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use http::header::HOST;
use http::{HeaderMap, Uri};

use crate::schema::printable;

/// The longest host name DNS allows, without the trailing dot.
pub const MAX_HOST_LEN: usize = 253;
/// The longest DNS label.
pub const MAX_LABEL_LEN: usize = 63;

/// A request host, normalized: lowercase, port and one trailing dot stripped, each label
/// 1–63 bytes of `[a-z0-9-]` not starting or ending with `-`, at most 253 bytes in all.
/// IPv4 and bracketed IPv6 literals are hosts too, but never have subdomains.
///
/// Two hosts that differ only in case, port or trailing dot are equal after normalization,
/// so a `Host` is the key of the hostname cache.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Host {
    name: Arc<str>,
    kind: HostKind,
}

/// What kind of host a [`Host`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HostKind {
    /// A DNS name.
    Domain,
    /// An IPv4 literal.
    Ipv4,
    /// A bracketed IPv6 literal.
    Ipv6,
}

/// Why a host was refused; the adapters answer 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind} (host `{input}`)")]
pub struct HostError {
    input: String,
    kind: HostErrorKind,
}

/// What was wrong with a host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HostErrorKind {
    /// The request carries neither a Host header nor a URI authority.
    #[error("the request names no host")]
    Missing,
    /// More than one Host header.
    #[error("the request has more than one Host header")]
    MultipleHostHeaders,
    /// The Host header and the URI authority name different hosts.
    #[error("the Host header and the request URI name different hosts (`{authority}`)")]
    Mismatch {
        /// The host in the URI authority.
        authority: String,
    },
    /// The host is empty.
    #[error("the host is empty")]
    Empty,
    /// The host is longer than 253 bytes.
    #[error("the host is longer than 253 bytes")]
    TooLong,
    /// Two dots in a row, or a leading dot.
    #[error("the host has an empty label")]
    EmptyLabel,
    /// A label is longer than 63 bytes.
    #[error("a label is longer than 63 bytes")]
    LabelTooLong,
    /// A label starts or ends with `-`.
    #[error("a label starts or ends with `-`")]
    HyphenAtLabelEdge,
    /// A character outside `[A-Za-z0-9.-]`.
    #[error("the host contains `{0}`, allowed are letters a-z, digits, `-` and `.`")]
    InvalidChar(char),
    /// The port is not a number from 1 to 65535.
    #[error("the port is not a number from 1 to 65535")]
    InvalidPort,
    /// Brackets that do not hold an IPv6 address, or an IPv6 address without brackets.
    #[error("not a valid bracketed IPv6 address")]
    InvalidIpv6,
    /// A name whose last label is numeric but which is not an IPv4 address.
    #[error("looks like an IPv4 address but is not one")]
    InvalidIpv4,
}

impl HostError {
    fn new(input: &str, kind: HostErrorKind) -> Self {
        Self {
            input: printable(input),
            kind,
        }
    }

    /// What was wrong.
    #[must_use]
    pub fn kind(&self) -> &HostErrorKind {
        &self.kind
    }

    /// The refused input, cut to 100 characters and escaped so it is safe to log.
    #[must_use]
    pub fn input(&self) -> &str {
        &self.input
    }
}

impl Host {
    /// Normalizes a host as it appears in a Host header or URI authority (`name[:port]`).
    pub fn parse(input: &str) -> Result<Self, HostError> {
        let err = |kind| HostError::new(input, kind);
        if input.is_empty() {
            return Err(err(HostErrorKind::Empty));
        }
        if let Some(rest) = input.strip_prefix('[') {
            let (addr, after) = rest
                .split_once(']')
                .ok_or_else(|| err(HostErrorKind::InvalidIpv6))?;
            check_port(after.strip_prefix(':'), after.is_empty()).map_err(err)?;
            let ip: Ipv6Addr = addr.parse().map_err(|_| err(HostErrorKind::InvalidIpv6))?;
            return Ok(Self {
                name: Arc::from(format!("[{ip}]")),
                kind: HostKind::Ipv6,
            });
        }
        let name = match input.split_once(':') {
            Some((name, port)) => {
                if port.contains(':') {
                    return Err(err(HostErrorKind::InvalidIpv6));
                }
                check_port(Some(port), false).map_err(err)?;
                name
            }
            None => input,
        };
        let name = name.strip_suffix('.').unwrap_or(name);
        if name.is_empty() {
            return Err(err(HostErrorKind::Empty));
        }
        if name.len() > MAX_HOST_LEN {
            return Err(err(HostErrorKind::TooLong));
        }
        if let Some(c) = name
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '.'))
        {
            return Err(err(HostErrorKind::InvalidChar(c)));
        }
        let name = name.to_ascii_lowercase();
        for label in name.split('.') {
            if label.is_empty() {
                return Err(err(HostErrorKind::EmptyLabel));
            }
            if label.len() > MAX_LABEL_LEN {
                return Err(err(HostErrorKind::LabelTooLong));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err(HostErrorKind::HyphenAtLabelEdge));
            }
        }
        let last = name.rsplit('.').next().unwrap_or_default();
        let kind = if last.bytes().all(|b| b.is_ascii_digit()) {
            // No top-level domain is numeric, so this must be an IPv4 literal. Re-render it
            // so that `010.1.1.1` and `10.1.1.1` cannot name one machine twice.
            let ip: Ipv4Addr = name.parse().map_err(|_| err(HostErrorKind::InvalidIpv4))?;
            return Ok(Self {
                name: Arc::from(ip.to_string()),
                kind: HostKind::Ipv4,
            });
        } else {
            HostKind::Domain
        };
        Ok(Self {
            name: Arc::from(name),
            kind,
        })
    }

    /// The host of a request: the Host header, or the URI authority (HTTP/2's `:authority`,
    /// or an absolute-form request target). If both are present they must name the same host.
    ///
    /// ```
    /// use tenant_schemas::Host;
    ///
    /// let req = http::Request::builder()
    ///     .uri("/notes")
    ///     .header("host", "acme.example.com:8080")
    ///     .body(())
    ///     .unwrap();
    /// let (parts, _) = req.into_parts();
    /// let host = Host::from_request(&parts.uri, &parts.headers).unwrap();
    /// assert_eq!(host.as_str(), "acme.example.com");
    /// ```
    pub fn from_request(uri: &Uri, headers: &HeaderMap) -> Result<Self, HostError> {
        let mut values = headers.get_all(HOST).iter();
        let header = values.next();
        if values.next().is_some() {
            return Err(HostError::new("", HostErrorKind::MultipleHostHeaders));
        }
        let from_header = match header {
            Some(value) => {
                let text = value.to_str().map_err(|_| {
                    HostError::new(
                        &String::from_utf8_lossy(value.as_bytes()),
                        HostErrorKind::InvalidChar(first_invisible(value.as_bytes())),
                    )
                })?;
                Some(Self::parse(text)?)
            }
            None => None,
        };
        let from_uri = match uri.authority() {
            Some(authority) => Some(Self::parse(authority.as_str())?),
            None => None,
        };
        match (from_header, from_uri) {
            (Some(h), Some(u)) if h != u => Err(HostError::new(
                h.as_str(),
                HostErrorKind::Mismatch {
                    authority: u.as_str().to_owned(),
                },
            )),
            (Some(h), _) => Ok(h),
            (None, Some(u)) => Ok(u),
            (None, None) => Err(HostError::new("", HostErrorKind::Missing)),
        }
    }

    /// The normalized host, e.g. `acme.example.com`, `10.0.0.1` or `[::1]`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.name
    }

    /// What kind of host this is.
    #[must_use]
    pub fn kind(&self) -> HostKind {
        self.kind
    }

    /// Whether this is an IPv4 or IPv6 literal.
    #[must_use]
    pub fn is_ip(&self) -> bool {
        self.kind != HostKind::Domain
    }

    /// The part of this host in front of `base`: `Some("acme")` for `acme.example.com` under
    /// `example.com`, `Some("a.b")` for `a.b.example.com`. `None` when this host is not a
    /// strict subdomain of `base`, and always `None` for IP literals.
    #[must_use]
    pub fn subdomain_of(&self, base: &Self) -> Option<&str> {
        if self.is_ip() || base.is_ip() {
            return None;
        }
        let prefix = self.name.strip_suffix(&*base.name)?;
        let sub = prefix.strip_suffix('.')?;
        (!sub.is_empty()).then_some(sub)
    }
}

fn first_invisible(bytes: &[u8]) -> char {
    bytes
        .iter()
        .find(|b| !(0x20..0x7f).contains(*b))
        .map_or('?', |&b| char::from(b))
}

fn check_port(port: Option<&str>, absent: bool) -> Result<(), HostErrorKind> {
    if absent {
        return Ok(());
    }
    match port {
        Some(p) if !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            match p.parse::<u32>() {
                Ok(1..=65535) => Ok(()),
                _ => Err(HostErrorKind::InvalidPort),
            }
        }
        _ => Err(HostErrorKind::InvalidPort),
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl fmt::Debug for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Host({:?})", &*self.name)
    }
}

impl std::str::FromStr for Host {
    type Err = HostError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl AsRef<str> for Host {
    fn as_ref(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_hosts() {
        let cases = [
            ("example.com", "example.com"),
            ("EXAMPLE.com", "example.com"),
            ("Acme.Example.Com", "acme.example.com"),
            ("example.com.", "example.com"),
            ("example.com:80", "example.com"),
            ("example.com.:8080", "example.com"),
            ("example.com:65535", "example.com"),
            ("localhost", "localhost"),
            ("acme.localhost:3000", "acme.localhost"),
            ("a", "a"),
            ("a-b.c-d.example", "a-b.c-d.example"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
            ("1password.com", "1password.com"),
            ("123.example.com", "123.example.com"),
            ("127.0.0.1", "127.0.0.1"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("10.0.0.1.", "10.0.0.1"),
            ("[::1]", "[::1]"),
            ("[::1]:3000", "[::1]"),
            ("[2001:DB8::0:1]", "[2001:db8::1]"),
            ("[::ffff:10.0.0.1]", "[::ffff:10.0.0.1]"),
            ("sub.sub.sub.example.co.uk", "sub.sub.sub.example.co.uk"),
            ("a1.b2", "a1.b2"),
        ];
        for (input, want) in cases {
            let host = Host::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(host.as_str(), want, "{input}");
        }
        let long_label = format!("{}.com", "a".repeat(63));
        assert!(Host::parse(&long_label).is_ok());
        let max = [
            &"a".repeat(63)[..],
            &"b".repeat(63),
            &"c".repeat(63),
            &"d".repeat(61),
        ]
        .join(".");
        assert_eq!(max.len(), 253);
        assert!(Host::parse(&max).is_ok());
        assert!(Host::parse(&format!("{max}.")).is_ok());
    }

    #[test]
    fn invalid_hosts() {
        use HostErrorKind::*;
        let too_long = [
            &"a".repeat(63)[..],
            &"b".repeat(63),
            &"c".repeat(63),
            &"d".repeat(62),
        ]
        .join(".");
        let long_label = format!("{}.com", "a".repeat(64));
        let cases: Vec<(&str, HostErrorKind)> = vec![
            ("", Empty),
            (".", Empty),
            (":80", Empty),
            ("..", EmptyLabel),
            ("a..b", EmptyLabel),
            (".example.com", EmptyLabel),
            ("example.com..", EmptyLabel),
            (&too_long, TooLong),
            (&long_label, LabelTooLong),
            ("-acme.example.com", HyphenAtLabelEdge),
            ("acme-.example.com", HyphenAtLabelEdge),
            ("acme_corp.example.com", InvalidChar('_')),
            ("acme corp.com", InvalidChar(' ')),
            ("acme.com/evil", InvalidChar('/')),
            ("a'; DROP TABLE tenants;--", InvalidChar('\'')),
            ("acme\"", InvalidChar('"')),
            ("acme\0.com", InvalidChar('\0')),
            ("acme\r\n.com", InvalidChar('\r')),
            ("bücher.example", InvalidChar('ü')),
            ("user@example.com", InvalidChar('@')),
            ("example.com:", InvalidPort),
            ("example.com:0", InvalidPort),
            ("example.com:65536", InvalidPort),
            ("example.com:99999999999", InvalidPort),
            ("example.com:-1", InvalidPort),
            ("example.com:80a", InvalidPort),
            ("example.com:+80", InvalidPort),
            ("::1", InvalidIpv6),
            ("[::1", InvalidIpv6),
            ("[not-ip]", InvalidIpv6),
            ("[::1]x", InvalidPort),
            ("[::1]:0", InvalidPort),
            ("256.0.0.1", InvalidIpv4),
            ("1.2.3", InvalidIpv4),
            ("010.0.0.1x.5", InvalidIpv4),
            ("example.123", InvalidIpv4),
        ];
        assert!(cases.len() >= 30);
        for (input, want) in cases {
            let err = Host::parse(input).expect_err(input);
            assert_eq!(err.kind(), &want, "{input:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn subdomains() {
        let base = Host::parse("example.com").unwrap();
        let sub = |h: &str| {
            Host::parse(h)
                .unwrap()
                .subdomain_of(&base)
                .map(str::to_owned)
        };
        assert_eq!(sub("acme.example.com").as_deref(), Some("acme"));
        assert_eq!(sub("a.b.example.com").as_deref(), Some("a.b"));
        assert_eq!(sub("example.com"), None);
        assert_eq!(sub("badexample.com"), None);
        assert_eq!(sub("example.org"), None);
        let ip = Host::parse("10.0.0.1").unwrap();
        // IP literals never have subdomains, nor are they a base for one.
        assert_eq!(ip.subdomain_of(&base), None);
        assert_eq!(
            Host::parse("a.10.0.0.1")
                .ok()
                .and_then(|h| h.subdomain_of(&ip).map(str::to_owned)),
            None
        );
        assert_eq!(
            Host::parse("1.10.0.0.1").err().map(|e| e.kind().clone()),
            Some(HostErrorKind::InvalidIpv4)
        );
    }

    fn parts(uri: &str, hosts: &[&[u8]]) -> http::request::Parts {
        let mut builder = http::Request::builder().uri(uri);
        for h in hosts {
            builder = builder.header(HOST, http::HeaderValue::from_bytes(h).unwrap());
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn from_request() {
        let p = parts("/x", &[b"Acme.Example.com:80"]);
        assert_eq!(
            Host::from_request(&p.uri, &p.headers).unwrap().as_str(),
            "acme.example.com"
        );
        let p = parts("https://acme.example.com/x", &[]);
        assert_eq!(
            Host::from_request(&p.uri, &p.headers).unwrap().as_str(),
            "acme.example.com"
        );
        let p = parts("https://acme.example.com/x", &[b"ACME.example.com"]);
        assert!(Host::from_request(&p.uri, &p.headers).is_ok());
        let p = parts("https://evil.example.com/x", &[b"acme.example.com"]);
        assert!(matches!(
            Host::from_request(&p.uri, &p.headers).unwrap_err().kind(),
            HostErrorKind::Mismatch { .. }
        ));
        let p = parts("/x", &[b"a.example.com", b"b.example.com"]);
        assert_eq!(
            Host::from_request(&p.uri, &p.headers).unwrap_err().kind(),
            &HostErrorKind::MultipleHostHeaders
        );
        let p = parts("/x", &[]);
        assert_eq!(
            Host::from_request(&p.uri, &p.headers).unwrap_err().kind(),
            &HostErrorKind::Missing
        );
        let p = parts("/x", &[b"caf\xc3\xa9.example"]);
        assert!(Host::from_request(&p.uri, &p.headers).is_err());
    }
}
