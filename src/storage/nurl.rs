//! Storage server addresses: NURLs (`pb://<spki-hash>@host:port/<swissnum>#v=1`, the HTTP storage protocol's
//! address, which pins the server's key) and Foolscap fURLs (`pb://<tubid>@tcp:host:port/<swissnum>`), which we
//! need for the tubid that Tahoe derives lease secrets and write enablers from.
//!
//! The NURL's user part is the unpadded base64url SHA-256 of the server certificate's SubjectPublicKeyInfo
//! (`allmydata/storage/http_common.py`); the swissnum is the storage object's secret name, used as ASCII.
//! A NURL may list several `host:port` hints separated by commas; Tahoe itself writes one NURL per hint.

use crate::crypto::base32;
use std::fmt;
use std::str::FromStr;
use thiserror::Error;

/// Why a string is not a usable storage address. The text never includes the swissnum (it is a secret).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum AddressError {
    #[error("not a storage NURL: it must start with pb:// (got {0:?})")]
    Scheme(String),
    #[error(
        "this is a Foolscap fURL, not a NURL: tahoe-mount speaks Tahoe's HTTP storage protocol and needs the \
         server's NURL (pb://<key-hash>@host:port/<swissnum>#v=1). A Tahoe-LAFS 1.20 storage node announces it as \
         `anonymous-storage-NURLs`; `tahoe-mount announce --node-dir` computes it from the node directory \
         (private/node.pem, private/storage.furl, tahoe.cfg)"
    )]
    FurlNotNurl,
    #[error("NURL version {0:?} is not supported (only #v=1)")]
    Version(String),
    #[error("malformed {what}: {problem}")]
    Malformed { what: &'static str, problem: String },
}

fn malformed(what: &'static str, problem: impl Into<String>) -> AddressError {
    AddressError::Malformed {
        what,
        problem: problem.into(),
    }
}

/// One place a server listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Hint {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for Hint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

fn parse_host_port(what: &'static str, text: &str) -> Result<Hint, AddressError> {
    let (host, port, bracketed) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| malformed(what, "unclosed '[' in an IPv6 host"))?;
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| malformed(what, format!("no port after [{host}]")))?;
        (host, port, true)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| malformed(what, format!("hint {text:?} has no :port")))?;
        (host, port, false)
    };
    // A host is a DNS name or IPv4 address, or in brackets an IPv6 address: nothing else prints back the same
    // (a ':' outside brackets, a NUL, a ']' or a '?' once did not).
    let valid = if bracketed {
        host.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= 253
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
    };
    if !valid {
        return Err(malformed(what, format!("bad host {host:?}")));
    }
    let port: u16 = port
        .parse()
        .map_err(|_| malformed(what, format!("bad port {port:?}")))?;
    if port == 0 {
        return Err(malformed(what, "port 0"));
    }
    Ok(Hint {
        host: host.to_owned(),
        port,
    })
}

fn check_swissnum(what: &'static str, swissnum: &str) -> Result<(), AddressError> {
    // Tahoe's swissnums are lowercase base32; any URL-safe token is accepted, nothing that could break a path.
    if swissnum.is_empty()
        || !swissnum
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(malformed(
            what,
            "the swissnum (path) must be one non-empty segment of letters and digits",
        ));
    }
    Ok(())
}

/// The address of a server speaking Tahoe's HTTP storage protocol, with the hash that pins its key.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Nurl {
    /// SHA-256 of the DER SubjectPublicKeyInfo of the server's certificate.
    pub spki_hash: [u8; 32],
    pub hints: Vec<Hint>,
    /// The storage object's secret name; sent (base64) in every request's Authorization header.
    pub swissnum: String,
    /// `pb+tor://`: reachable over Tor only.
    pub tor: bool,
}

impl Nurl {
    /// The pin as Tahoe writes it: unpadded base64url.
    pub fn spki_hash_b64(&self) -> String {
        data_encoding::BASE64URL_NOPAD.encode(&self.spki_hash)
    }

    /// The first hint's `host:port`, for messages.
    pub fn endpoint(&self) -> String {
        self.hints.first().map(Hint::to_string).unwrap_or_default()
    }
}

impl FromStr for Nurl {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Nurl, AddressError> {
        let text = text.trim();
        let (tor, rest) = if let Some(rest) = text.strip_prefix("pb+tor://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("pb://") {
            (false, rest)
        } else {
            return Err(AddressError::Scheme(text.chars().take(12).collect()));
        };
        let Some((rest, fragment)) = rest.split_once('#') else {
            return Err(AddressError::FurlNotNurl);
        };
        if fragment != "v=1" {
            return Err(AddressError::Version(fragment.chars().take(16).collect()));
        }
        let (spki, rest) = rest
            .split_once('@')
            .ok_or_else(|| malformed("NURL", "no '@' after the key hash"))?;
        let (hints, swissnum) = rest
            .split_once('/')
            .ok_or_else(|| malformed("NURL", "no '/<swissnum>' after the host"))?;
        let spki_hash = data_encoding::BASE64URL_NOPAD
            .decode(spki.as_bytes())
            .ok()
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
            .ok_or_else(|| {
                malformed(
                    "NURL",
                    "the key hash must be 43 characters of unpadded base64url (SHA-256)",
                )
            })?;
        check_swissnum("NURL", swissnum)?;
        let hints = hints
            .split(',')
            .map(|h| parse_host_port("NURL", h))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Nurl {
            spki_hash,
            hints,
            swissnum: swissnum.to_owned(),
            tor,
        })
    }
}

impl fmt::Display for Nurl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hints: Vec<String> = self.hints.iter().map(Hint::to_string).collect();
        let scheme = if self.tor { "pb+tor" } else { "pb" };
        write!(
            f,
            "{scheme}://{}@{}/{}#v=1",
            self.spki_hash_b64(),
            hints.join(","),
            self.swissnum
        )
    }
}

/// Shows where, never the swissnum: safe to log.
impl fmt::Debug for Nurl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "<NURL {} key={}…>",
            self.endpoint(),
            &self.spki_hash_b64()[..8]
        )
    }
}

/// A Foolscap fURL. We never speak Foolscap; we read the tubid from it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Furl {
    /// base32(SHA-1(DER certificate)) decoded: the node id Tahoe derives lease secrets and write enablers from.
    pub tubid: [u8; 20],
    /// Connection hints as written (`tcp:host:port`, `tor:…`, …).
    pub hints: Vec<String>,
    pub swissnum: String,
}

impl Furl {
    pub fn tubid_base32(&self) -> String {
        base32::encode(&self.tubid)
    }
}

impl FromStr for Furl {
    type Err = AddressError;

    fn from_str(text: &str) -> Result<Furl, AddressError> {
        let text = text.trim();
        let rest = text
            .strip_prefix("pb://")
            .ok_or_else(|| AddressError::Scheme(text.chars().take(12).collect()))?;
        if rest.contains('#') {
            return Err(malformed(
                "fURL",
                "has a '#' fragment: this looks like a NURL",
            ));
        }
        let (tubid, rest) = rest
            .split_once('@')
            .ok_or_else(|| malformed("fURL", "no '@' after the tub id"))?;
        let (hints, swissnum) = rest
            .split_once('/')
            .ok_or_else(|| malformed("fURL", "no '/<swissnum>'"))?;
        let tubid = base32::decode_array::<20>(tubid).map_err(|e| {
            malformed(
                "fURL",
                format!("the tub id must be 32 base32 characters: {e}"),
            )
        })?;
        check_swissnum("fURL", swissnum)?;
        let hints: Vec<String> = hints
            .split(',')
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .collect();
        Ok(Furl {
            tubid,
            hints,
            swissnum: swissnum.to_owned(),
        })
    }
}

impl fmt::Display for Furl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pb://{}@{}/{}",
            self.tubid_base32(),
            self.hints.join(","),
            self.swissnum
        )
    }
}

impl fmt::Debug for Furl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<fURL tubid={}>", self.tubid_base32())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_that_would_not_print_back_are_refused_and_good_ones_round_trip() {
        let key = "A".repeat(43);
        for host in [
            "a:b",
            "a\0b",
            "a]b",
            "a?b",
            "[not-v6]",
            "[::1",
            "",
            "a b",
            "ex%61mple",
        ] {
            let text = format!("pb://{key}@{host}:1234/swiss#v=1");
            assert!(text.parse::<Nurl>().is_err(), "{host:?} was accepted");
        }
        for hosts in [
            "example.org:1",
            "127.0.0.1:443",
            "[::1]:8080",
            "[2001:db8::7]:9,tahoe_1.lan:2",
        ] {
            let text = format!("pb://{key}@{hosts}/swiss#v=1");
            let nurl: Nurl = text.parse().unwrap();
            assert_eq!(nurl.to_string(), text);
            assert_eq!(nurl.to_string().parse::<Nurl>().unwrap(), nurl);
        }
    }

    const NURL: &str = "pb://E7aJj9qNPfms6PZTKWCaMD8qmBMumLbjdt6oAZ69lT8@127.0.0.1:24601/cdynbizisajfk3wr6wgdogct3hkc6g2u#v=1";
    const FURL: &str = "pb://5tle46leisxf2nljqldkdeucnvrc73wk@tcp:127.0.0.1:24601/cdynbizisajfk3wr6wgdogct3hkc6g2u";

    #[test]
    fn parses_and_prints_a_real_nurl() {
        let nurl: Nurl = NURL.parse().unwrap();
        assert_eq!(
            nurl.hints,
            vec![Hint {
                host: "127.0.0.1".into(),
                port: 24601
            }]
        );
        assert_eq!(nurl.swissnum, "cdynbizisajfk3wr6wgdogct3hkc6g2u");
        assert_eq!(nurl.to_string(), NURL);
        assert!(
            !format!("{nurl:?}").contains(&nurl.swissnum),
            "Debug hides the swissnum"
        );
    }

    #[test]
    fn several_hints_and_ipv6() {
        let text = NURL.replace("127.0.0.1:24601", "a.example:1,[::1]:2");
        let nurl: Nurl = text.parse().unwrap();
        assert_eq!(nurl.hints.len(), 2);
        assert_eq!(nurl.hints[1].host, "::1");
        assert_eq!(nurl.to_string(), text);
    }

    #[test]
    fn a_furl_where_a_nurl_is_needed_says_so() {
        let err = FURL.parse::<Nurl>().unwrap_err();
        assert_eq!(err, AddressError::FurlNotNurl);
        assert!(err.to_string().contains("anonymous-storage-NURLs"));
    }

    #[test]
    fn malformed_nurls_are_errors() {
        for bad in [
            "http://x",
            &NURL.replace("#v=1", "#v=2"),
            &NURL.replace("E7aJ", "E7a"),
            &NURL.replace(":24601", ":99999"),
            &NURL.replace(":24601", ""),
            &NURL.replace("/cdyn", "/cd/yn"),
            &NURL.replace("@", ""),
        ] {
            assert!(bad.parse::<Nurl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn furl_gives_the_tubid() {
        let furl: Furl = FURL.parse().unwrap();
        assert_eq!(furl.tubid_base32(), "5tle46leisxf2nljqldkdeucnvrc73wk");
        assert_eq!(furl.hints, vec!["tcp:127.0.0.1:24601".to_owned()]);
        assert_eq!(furl.to_string(), FURL);
        assert!(NURL.parse::<Furl>().is_err());
    }
}
