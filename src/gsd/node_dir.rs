//! Reading a stock Tahoe-LAFS storage node's directory to build the announcement it would make.
//!
//! A storage server enrols in a grid service directory with the announcement its node would send an introducer
//! (`allmydata/client.py` `init_storage`, completed by `introducer/client.py` `create_announcement_dict`), less the
//! fields each publish sets (`my-version`, `seqnum`, `nonce`). Tahoe builds that announcement in memory at start
//! and stores it nowhere, so it is rebuilt here, read-only, from the files the node keeps:
//!
//! - `tahoe.cfg`, read as Tahoe reads it (Python's `configparser` with `strict=False` and `%` interpolation):
//!   `[node] nickname`, `tub.location`, `tub.port`, `reveal-IP-address` and the `[storage]` switches;
//! - `node.pubkey`: the server id (`v0-…`), which is also the announcement's key;
//! - `private/node.pem`: the Foolscap certificate. The SHA-256 of its SubjectPublicKeyInfo pins every NURL
//!   (`storage/http_common.py` `get_spki_hash`); its SHA-1 is the tub id of the fURL;
//! - `private/storage.furl`: the anonymous storage fURL, rewritten at every start. The NURLs reuse its swissnum
//!   (`client.py` hands the fURL's swissnum to `protocol_switch.py` `add_storage_server`);
//! - `permutation-seed`, or the value `_init_permutation_seed` would write at the first start.
//!
//! Tahoe's rules are kept where they surprise: one NURL per `tcp:` or `tor:` hint of `tub.location`, which is
//! split on commas without trimming, and any other hint is skipped; `AUTO` means the addresses detected at
//! start, which only the fURL written at the last start records; an unset nickname is announced as
//! `<unspecified>`; a derived permutation seed is the base32 of the public key's *base32 text*. A directory Tahoe
//! would refuse to start from is an error here, and so is a storage node without an anonymous HTTP storage
//! service, since that is what a grid service announcement is for.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use sha1::Digest;

use crate::crypto::base32;
use crate::storage::nurl::{Furl, Nurl};

/// The largest file read from a node directory: every file Tahoe keeps there is far smaller.
const MAX_FILE_BYTES: u64 = 1 << 20;

/// What `node.py` `_Config.nickname` gives when `[node] nickname` is not set.
const UNSPECIFIED_NICKNAME: &str = "<unspecified>";

/// `client.py` `_Client.OLDEST_SUPPORTED_VERSION`.
const OLDEST_SUPPORTED: &str = "1.0.0";

/// Python's `configparser.MAX_INTERPOLATION_DEPTH`.
const MAX_INTERPOLATION_DEPTH: usize = 10;

/// What a storage node announces, read from its directory.
#[derive(Clone)]
pub struct NodeAnnouncement {
    /// "v0-" + 52 base32 chars: node.pubkey without its "pub-" prefix (this is Tahoe's server id / announcement key).
    pub server_id: String,
    /// The `ann` mapping: `version`, `nickname`, `app-versions`, `oldest-supported`, `service-name`,
    /// `permutation-seed-base32`, `anonymous-storage-FURL`, `anonymous-storage-NURLs` (sorted) and, on a node
    /// with `[storage] grid_management`, `grid-manager-certificates`.
    pub ann: Map<String, Value>,
    /// The parsed NURLs (also in ann["anonymous-storage-NURLs"]).
    pub nurls: Vec<Nurl>,
}

/// Shows where the node is, never the fURL or a NURL in full: they carry the swissnum, a secret.
impl fmt::Debug for NodeAnnouncement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeAnnouncement")
            .field("server_id", &self.server_id)
            .field("nurls", &self.nurls)
            .finish_non_exhaustive()
    }
}

/// A node directory this module cannot build an announcement from: which file, and what is wrong with it.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct NodeDirError {
    pub path: PathBuf,
    pub problem: String,
}

fn error_at(path: &Path, problem: impl Into<String>) -> NodeDirError {
    NodeDirError {
        path: path.to_owned(),
        problem: problem.into(),
    }
}

/// Default place for the GSA writecap: <dir>/private/gsa.writecap
pub fn default_gsa_writecap_path(dir: &Path) -> PathBuf {
    dir.join("private").join("gsa.writecap")
}

/// Builds the storage announcement of the stock Tahoe-LAFS 1.20 node whose base directory is `dir`, without
/// writing anything there.
pub fn read_node_dir(dir: &Path) -> Result<NodeAnnouncement, NodeDirError> {
    let cfg_path = dir.join("tahoe.cfg");
    let cfg_text = read_text(&cfg_path)?.ok_or_else(|| {
        error_at(
            &cfg_path,
            "missing: is this the base directory of a Tahoe-LAFS node?",
        )
    })?;
    let cfg = TahoeCfg::parse(&cfg_path, &cfg_text)?;
    check_storage_service(&cfg)?;

    let server_id = read_server_id(&dir.join("node.pubkey"))?;
    let certificate = read_certificate(&dir.join("private").join("node.pem"))?;

    let furl_path = dir.join("private").join("storage.furl");
    let furl_text = read_text(&furl_path)?
        .ok_or_else(|| {
            error_at(
                &furl_path,
                "missing: Tahoe writes the storage fURL at the node's first start as a storage server",
            )
        })?
        .trim()
        .to_owned();
    let furl: Furl = furl_text
        .parse()
        .map_err(|e| error_at(&furl_path, format!("not a storage fURL: {e}")))?;
    if furl.tubid != certificate.tubid {
        // Foolscap's registerReference refuses such a file (WrongTubIdError), so the node could not start.
        return Err(error_at(
            &furl_path,
            format!(
                "its tub id {} is not the one of private/node.pem ({}): the file belongs to another node",
                furl.tubid_base32(),
                base32::encode(&certificate.tubid)
            ),
        ));
    }

    let (location, location_source) = tub_location(&cfg, &furl_path, furl_hints_text(&furl_text))?;
    let nurl_texts = storage_nurls(
        &location,
        &certificate.spki_hash_b64,
        &furl.swissnum,
        &location_source,
    )?;
    let nurls = nurl_texts
        .iter()
        .map(|text| parse_nurl(text, &location_source))
        .collect::<Result<Vec<_>, _>>()?;

    let seed = permutation_seed(dir, &cfg, &server_id, &furl)?;
    let nickname = cfg
        .get("node", "nickname")?
        .unwrap_or_else(|| UNSPECIFIED_NICKNAME.to_owned());

    // The keys of init_storage's dict, then those create_announcement_dict adds except the per-publish ones.
    let mut ann = Map::new();
    ann.insert("version".into(), Value::from(0));
    ann.insert("nickname".into(), Value::from(nickname));
    ann.insert("app-versions".into(), Value::Array(Vec::new()));
    ann.insert("oldest-supported".into(), Value::from(OLDEST_SUPPORTED));
    ann.insert("service-name".into(), Value::from("storage"));
    ann.insert("permutation-seed-base32".into(), Value::from(seed));
    ann.insert(
        "anonymous-storage-NURLs".into(),
        Value::Array(nurl_texts.into_iter().map(Value::from).collect()),
    );
    ann.insert("anonymous-storage-FURL".into(), Value::from(furl_text));
    if cfg.get_bool("storage", "grid_management", false)? {
        ann.insert(
            "grid-manager-certificates".into(),
            Value::Array(grid_manager_certificates(dir, &cfg)?),
        );
    }

    Ok(NodeAnnouncement {
        server_id,
        ann,
        nurls,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// Files

/// The bytes of a regular file of at most `MAX_FILE_BYTES`, or None if there is no such file.
fn read_limited(path: &Path) -> Result<Option<Vec<u8>>, NodeDirError> {
    let metadata = match fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(error_at(path, format!("cannot read: {e}"))),
    };
    // Opening a FIFO would block, and a directory has no text to read.
    if !metadata.is_file() {
        return Err(error_at(path, "not a regular file"));
    }
    let file = fs::File::open(path).map_err(|e| error_at(path, format!("cannot open: {e}")))?;
    let mut bytes = Vec::new();
    // The size in the metadata may be stale by now; reading one byte past the limit tells for sure.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| error_at(path, format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(error_at(
            path,
            format!("larger than {MAX_FILE_BYTES} bytes: not a file Tahoe writes"),
        ));
    }
    Ok(Some(bytes))
}

/// A UTF-8 text file, or None if there is no such file.
fn read_text(path: &Path) -> Result<Option<String>, NodeDirError> {
    read_limited(path)?
        .map(|bytes| String::from_utf8(bytes).map_err(|_| error_at(path, "not UTF-8 text")))
        .transpose()
}

/// Python's `bytes.strip()`: Tahoe reads `permutation-seed` as bytes and strips ASCII whitespace only.
fn strip_ascii_whitespace(text: &str) -> &str {
    text.trim_matches(|c: char| matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'))
}

/// A path from `tahoe.cfg`, as `_Config.get_config_path` makes it: relative to the base directory. It joins before
/// it expands `~`, so a relative `~/x` is not in the home directory.
fn config_path(dir: &Path, value: &str) -> PathBuf {
    dir.join(value)
}

/// `node.pubkey` (`pub-v0-` + 52 base32 characters) as a server id, `v0-…`.
fn read_server_id(path: &Path) -> Result<String, NodeDirError> {
    let text = read_text(path)?.ok_or_else(|| {
        error_at(
            path,
            "missing: Tahoe writes it from private/node.privkey at every start",
        )
    })?;
    let key = text.trim();
    let encoded = key.strip_prefix("pub-v0-").ok_or_else(|| {
        error_at(
            path,
            "not an ed25519 public key: it must start with pub-v0-",
        )
    })?;
    base32::decode_array::<32>(encoded).map_err(|e| {
        error_at(
            path,
            format!(
                "not an ed25519 public key: pub-v0- must be followed by 52 base32 characters ({e})"
            ),
        )
    })?;
    Ok(format!("v0-{encoded}"))
}

/// What the node's Foolscap certificate gives an announcement.
struct NodeCertificate {
    /// Unpadded base64url SHA-256 of the certificate's SubjectPublicKeyInfo: the NURL pin.
    spki_hash_b64: String,
    /// SHA-1 of the certificate's DER: Foolscap's tub id.
    tubid: [u8; 20],
}

/// The first certificate of `private/node.pem` (which holds the certificate and its private key), as Foolscap
/// loads it.
fn read_certificate(path: &Path) -> Result<NodeCertificate, NodeDirError> {
    let pem = read_limited(path)?.ok_or_else(|| {
        error_at(
            path,
            "missing: Tahoe makes the node's certificate here at its first start",
        )
    })?;
    let mut der = None;
    for block in x509_parser::pem::Pem::iter_from_buffer(&pem) {
        let block = block.map_err(|e| error_at(path, format!("unparseable PEM: {e}")))?;
        if block.label == "CERTIFICATE" {
            der = Some(block.contents);
            break;
        }
    }
    let der = der.ok_or_else(|| error_at(path, "no PEM CERTIFICATE block"))?;
    let spki_hash = crate::storage::tls::spki_hash(&der)
        .map_err(|e| error_at(path, format!("not an X.509 certificate: {e}")))?;
    Ok(NodeCertificate {
        spki_hash_b64: data_encoding::BASE64URL_NOPAD.encode(&spki_hash),
        tubid: sha1::Sha1::digest(&der).into(),
    })
}

/// The hints part of a fURL, `pb://<tubid>@<hints>/<swissnum>`, as Foolscap wrote it.
fn furl_hints_text(furl: &str) -> &str {
    let after_tubid = furl.split_once('@').map_or("", |(_, rest)| rest);
    after_tubid.split_once('/').map_or("", |(hints, _)| hints)
}

// ---------------------------------------------------------------------------------------------------------------
// The storage service and its addresses

/// Errors unless Tahoe would run an anonymous storage service speaking the HTTP storage protocol.
fn check_storage_service(cfg: &TahoeCfg) -> Result<(), NodeDirError> {
    if !cfg.get_bool("storage", "enabled", true)? {
        return Err(cfg.error("not a storage node: [storage] enabled is false"));
    }
    if !cfg.get_bool("storage", "anonymous", true)? {
        return Err(cfg.error(
            "[storage] anonymous is false: the node offers no anonymous storage service, so it has no storage \
             fURL or NURL to announce",
        ));
    }
    if cfg.get_bool("storage", "force_foolscap", false)? {
        return Err(cfg.error(
            "[storage] force_foolscap is true: the node speaks only Foolscap and announces no NURL, and \
             tahoe-mount needs Tahoe's HTTP storage protocol",
        ));
    }
    let plugins = cfg.get("storage", "plugins")?.unwrap_or_default();
    if plugins.split(',').any(|name| !name.is_empty()) {
        return Err(cfg.error(format!(
            "[storage] plugins = {plugins:?}: a storage plugin adds its own part to the announcement \
             (storage-options), which cannot be read from the node directory"
        )));
    }
    Ok(())
}

/// `[node] tub.location` as `node.py` `_tub_portlocation` turns it into the tub's location, and the file that
/// location comes from.
///
/// The fURL holds the location the node had at its last start (Foolscap builds it as `pb://<tubid>@<location>/…`
/// and rewrites the file at every start). So `AUTO`, which stands for the addresses the node detected then, is
/// read from the fURL; otherwise the two must agree, or the node has not been restarted since `tahoe.cfg` changed
/// and what it announces now differs from what `tahoe.cfg` says.
fn tub_location(
    cfg: &TahoeCfg,
    furl_path: &Path,
    furl_hints: &str,
) -> Result<(String, PathBuf), NodeDirError> {
    match cfg.get("node", "tub.port")?.as_deref().map(str::trim) {
        Some("") => return Err(cfg.error("[node] tub.port is empty: Tahoe refuses to start")),
        Some("disabled") => {
            return Err(cfg.error(
                "[node] tub.port is disabled: a storage server needs a listening tub (Tahoe refuses to start)",
            ));
        }
        _ => {}
    }
    let location = cfg
        .get("node", "tub.location")?
        .map(|value| value.trim().to_owned())
        .unwrap_or_else(|| "AUTO".to_owned());
    match location.as_str() {
        "" => return Err(cfg.error("[node] tub.location is empty: Tahoe refuses to start")),
        "disabled" => {
            return Err(cfg.error(
                "[node] tub.location is disabled: a storage server needs a location (Tahoe refuses to start)",
            ));
        }
        _ => {}
    }
    let reveal_ip = cfg.get_bool("node", "reveal-IP-address", true)?;
    if location.split(',').any(|hint| hint == "AUTO") {
        if !reveal_ip {
            return Err(cfg.error(
                "tub.location uses AUTO but reveal-IP-address is false: Tahoe refuses to start (PrivacyError)",
            ));
        }
        return Ok((furl_hints.to_owned(), furl_path.to_owned()));
    }
    if !reveal_ip && let Some(hint) = location.split(',').find(|hint| is_tcp_hint(hint)) {
        return Err(cfg.error(format!(
            "tub.location has the TCP hint {hint:?} but reveal-IP-address is false: Tahoe refuses to start \
             (PrivacyError)"
        )));
    }
    if location != furl_hints {
        return Err(cfg.error(format!(
            "[node] tub.location is {location:?}, but {} (written at the node's last start) has the hints \
             {furl_hints:?}: restart the node, so that what it announces is what tahoe.cfg says",
            furl_path.display()
        )));
    }
    Ok((location, cfg.path.clone()))
}

/// Whether `node.py` takes `hint` for TCP: `tcp…`, or a legacy `host:port` (`connections/tcp.py`
/// `convert_legacy_hint`).
fn is_tcp_hint(hint: &str) -> bool {
    if hint.split(':').next() == Some("tcp") {
        return true;
    }
    hint.split_once(':').is_some_and(|(host, port)| {
        !host.is_empty()
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
            && !port.is_empty()
            && port.bytes().all(|b| b.is_ascii_digit())
    })
}

/// The NURL texts Tahoe announces for `location`, sorted: `protocol_switch.py` `add_storage_server` makes one per
/// `tcp:HOST:PORT` (`pb://`) or `tor:HOST.onion:PORT` (`pb+tor://`) hint and announces them as a set.
fn storage_nurls(
    location: &str,
    spki_hash_b64: &str,
    swissnum: &str,
    source: &Path,
) -> Result<Vec<String>, NodeDirError> {
    let mut nurls = BTreeSet::new();
    let mut skipped = Vec::new();
    for hint in location.split(',') {
        let (scheme, tor) = if hint.starts_with("tcp:") {
            ("pb", false)
        } else if hint.starts_with("tor:") {
            ("pb+tor", true)
        } else {
            skipped.push(hint);
            continue;
        };
        let parts: Vec<&str> = hint.split(':').collect();
        let [_, host, port] = parts[..] else {
            return Err(error_at(
                source,
                format!(
                    "the hint {hint:?} is not scheme:host:port: Tahoe 1.20 splits a storage hint at every ':' and \
                     refuses to start with this one (so an IPv6 address cannot be a storage hint)"
                ),
            ));
        };
        if tor && !host.ends_with(".onion") {
            return Err(error_at(
                source,
                format!("the Tor hint {hint:?} is not a .onion address: Tahoe refuses to start"),
            ));
        }
        let port = python_int(port).ok_or_else(|| {
            error_at(
                source,
                format!("the hint {hint:?} has no port number: Tahoe refuses to start"),
            )
        })?;
        nurls.insert(format!(
            "{scheme}://{spki_hash_b64}@{host}:{port}/{swissnum}#v=1"
        ));
    }
    if nurls.is_empty() {
        return Err(error_at(
            source,
            format!(
                "the location {location:?} has no tcp: or tor: hint, so the node announces no NURL (hints \
                 skipped: {skipped:?})"
            ),
        ));
    }
    Ok(nurls.into_iter().collect())
}

/// Python's `int()` of a port: surrounding whitespace, a `+` sign and `_` between digits are allowed. None if it
/// is not a non-negative number that fits a `u32` (a larger one is no port either).
fn python_int(text: &str) -> Option<u32> {
    let digits = text.trim();
    let digits = digits.strip_prefix('+').unwrap_or(digits);
    if digits.is_empty()
        || digits.starts_with('_')
        || digits.ends_with('_')
        || digits.contains("__")
        || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_')
    {
        return None;
    }
    digits.replace('_', "").parse().ok()
}

/// Parses a NURL we built, and checks it prints back as Tahoe wrote it: a NURL we cannot represent exactly would
/// pin or reach something else than the announcement says.
fn parse_nurl(text: &str, source: &Path) -> Result<Nurl, NodeDirError> {
    let nurl: Nurl = text
        .parse()
        .map_err(|e| error_at(source, format!("a hint gives an unusable NURL: {e}")))?;
    if nurl.to_string() != text {
        return Err(error_at(
            source,
            format!(
                "the NURL for {} does not print back as Tahoe writes it",
                nurl.endpoint()
            ),
        ));
    }
    Ok(nurl)
}

/// The node's permutation seed: `permutation-seed`, or what `client.py` `_init_permutation_seed` writes there at
/// the first start (it is computed here, never written): the tub id if the node already holds shares (a node
/// older than the seed file), else the base32 of the public key's base32 text.
fn permutation_seed(
    dir: &Path,
    cfg: &TahoeCfg,
    server_id: &str,
    furl: &Furl,
) -> Result<String, NodeDirError> {
    let path = dir.join("permutation-seed");
    if let Some(text) = read_text(&path)? {
        let seed = strip_ascii_whitespace(&text);
        if !seed.is_empty() {
            // Clients base32-decode it (storage_client.py _parse_announcement).
            base32::decode(seed)
                .map_err(|e| error_at(&path, format!("not a base32 permutation seed: {e}")))?;
            return Ok(seed.to_owned());
        }
    }
    let storage_dir = cfg
        .get("storage", "storage_dir")?
        .unwrap_or_else(|| "storage".to_owned());
    let shares = config_path(dir, &storage_dir).join("shares");
    let has_shares = match fs::read_dir(&shares) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(e) => return Err(error_at(&shares, format!("cannot list: {e}"))),
        Ok(entries) => {
            let mut any = false;
            for entry in entries {
                let entry = entry.map_err(|e| error_at(&shares, format!("cannot list: {e}")))?;
                // storage/server.py have_shares: anything but the upload area counts.
                if entry.file_name() != "incoming" {
                    any = true;
                    break;
                }
            }
            any
        }
    };
    if has_shares {
        Ok(furl.tubid_base32())
    } else {
        let key_base32 = server_id.strip_prefix("v0-").unwrap_or(server_id);
        Ok(base32::encode(key_base32.as_bytes()))
    }
}

/// `node.py` `get_grid_manager_certificates`: the JSON certificate files named in `[grid_manager_certificates]`.
fn grid_manager_certificates(dir: &Path, cfg: &TahoeCfg) -> Result<Vec<Value>, NodeDirError> {
    let mut certificates = Vec::new();
    for name in cfg.options("grid_manager_certificates") {
        let Some(file) = cfg.get("grid_manager_certificates", &name)? else {
            continue;
        };
        let path = config_path(dir, &file);
        let text = read_text(&path)?.ok_or_else(|| {
            error_at(
                &path,
                format!("missing ([grid_manager_certificates] {name} names it)"),
            )
        })?;
        let certificate: Value =
            serde_json::from_str(&text).map_err(|e| error_at(&path, format!("not JSON: {e}")))?;
        let well_formed = certificate.as_object().is_some_and(|fields| {
            fields.len() == 2
                && fields.contains_key("certificate")
                && fields.contains_key("signature")
        });
        if !well_formed {
            return Err(error_at(
                &path,
                "not a Grid Manager certificate: it must be an object of exactly certificate and signature",
            ));
        }
        certificates.push(certificate);
    }
    Ok(certificates)
}

// ---------------------------------------------------------------------------------------------------------------
// tahoe.cfg

/// One section's settings in file order: lowercased key, raw value (before interpolation).
type Settings = Vec<(String, String)>;

/// A section's settings while parsing: each value as its lines, which configparser joins at the end.
type SettingLines = Vec<(String, Vec<String>)>;

/// `tahoe.cfg` as Tahoe reads it: Python's `configparser.ConfigParser(strict=False)` (`util/configutil.py`) on
/// the text decoded as `utf-8-sig`. So `[DEFAULT]` settings show through every section; a repeated section or key
/// merges (the last value wins); a line indented deeper than its key continues the value (blank lines inside
/// are kept); whole-line `#` and `;` comments are dropped, but a `#` after a value is part of it; keys are
/// case-insensitive, section names are not; and values go through `%` interpolation when read.
struct TahoeCfg {
    path: PathBuf,
    defaults: Settings,
    sections: Vec<(String, Settings)>,
}

/// Where the parser puts settings: nowhere before the first header, `[DEFAULT]`, or the i-th section.
#[derive(Clone, Copy, PartialEq)]
enum Target {
    Defaults,
    Section(usize),
}

impl TahoeCfg {
    fn parse(path: &Path, text: &str) -> Result<TahoeCfg, NodeDirError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut defaults: SettingLines = Vec::new();
        let mut sections: Vec<(String, SettingLines)> = Vec::new();
        let mut target: Option<Target> = None;
        let mut current_key: Option<usize> = None;
        let mut indent_level = 0;
        let mut bad_lines = Vec::new();
        for (index, line) in text.split_inclusive('\n').enumerate() {
            let stripped = line.trim();
            let is_comment = stripped.starts_with('#') || stripped.starts_with(';');
            let settings = match target {
                None => None,
                Some(Target::Defaults) => Some(&mut defaults),
                Some(Target::Section(i)) => Some(&mut sections[i].1),
            };
            if stripped.is_empty() || is_comment {
                if !is_comment && let (Some(settings), Some(key)) = (settings, current_key) {
                    settings[key].1.push(String::new());
                }
                continue;
            }
            let indent = line.chars().take_while(|c| c.is_whitespace()).count();
            if let (Some(settings), Some(key)) = (settings, current_key)
                && indent > indent_level
            {
                settings[key].1.push(stripped.to_owned());
                continue;
            }
            indent_level = indent;
            if let Some(name) = section_header(stripped) {
                target = Some(if name == "DEFAULT" {
                    Target::Defaults
                } else if let Some(i) = sections.iter().position(|(n, _)| n == name) {
                    Target::Section(i)
                } else {
                    sections.push((name.to_owned(), Vec::new()));
                    Target::Section(sections.len() - 1)
                });
                current_key = None;
                continue;
            }
            let settings = match target {
                None => {
                    return Err(error_at(
                        path,
                        format!("line {}: a setting before any [section] header", index + 1),
                    ));
                }
                Some(Target::Defaults) => &mut defaults,
                Some(Target::Section(i)) => &mut sections[i].1,
            };
            // configparser splits at the first '=' or ':'.
            let Some(at) = stripped.find(['=', ':']) else {
                bad_lines.push(index + 1);
                current_key = None;
                continue;
            };
            let key = stripped[..at].trim_end().to_lowercase();
            if key.is_empty() {
                bad_lines.push(index + 1);
            }
            let value = vec![stripped[at + 1..].trim().to_owned()];
            current_key = Some(match settings.iter().position(|(k, _)| *k == key) {
                Some(i) => {
                    settings[i].1 = value;
                    i
                }
                None => {
                    settings.push((key, value));
                    settings.len() - 1
                }
            });
        }
        if !bad_lines.is_empty() {
            return Err(error_at(
                path,
                format!(
                    "line(s) {bad_lines:?} are neither a [section] header nor key = value (Tahoe refuses to start)"
                ),
            ));
        }
        let join = |settings: SettingLines| -> Settings {
            settings
                .into_iter()
                .map(|(key, lines)| (key, lines.join("\n").trim_end().to_owned()))
                .collect()
        };
        Ok(TahoeCfg {
            path: path.to_owned(),
            defaults: join(defaults),
            sections: sections
                .into_iter()
                .map(|(name, settings)| (name, join(settings)))
                .collect(),
        })
    }

    fn error(&self, problem: impl Into<String>) -> NodeDirError {
        error_at(&self.path, problem)
    }

    fn section(&self, name: &str) -> Option<&Settings> {
        self.sections
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, settings)| settings)
    }

    /// The raw value of `key` as seen from `section`: its own, else `[DEFAULT]`'s.
    fn raw<'a>(&'a self, section: &'a Settings, key: &str) -> Option<&'a str> {
        section
            .iter()
            .chain(&self.defaults)
            .find(|(k, _)| k == key)
            .map(|(_, value)| value.as_str())
    }

    /// `[section] key`, interpolated; None if the section or the key is missing (a key only in `[DEFAULT]` of a
    /// missing section is missing, as configparser's NoSectionError makes Tahoe use its default).
    fn get(&self, section: &str, key: &str) -> Result<Option<String>, NodeDirError> {
        let Some(settings) = self.section(section) else {
            return Ok(None);
        };
        let key = key.to_lowercase();
        let Some(raw) = self.raw(settings, &key) else {
            return Ok(None);
        };
        let mut value = String::new();
        self.interpolate(section, &key, settings, raw, 1, &mut value)?;
        Ok(Some(value))
    }

    /// configparser's `getboolean`, with Tahoe's `default` when the setting is missing.
    fn get_bool(&self, section: &str, key: &str, default: bool) -> Result<bool, NodeDirError> {
        let Some(value) = self.get(section, key)? else {
            return Ok(default);
        };
        match value.to_lowercase().as_str() {
            "1" | "yes" | "true" | "on" => Ok(true),
            "0" | "no" | "false" | "off" => Ok(false),
            _ => Err(self.error(format!(
                "[{section}] {key} = {value:?} is not a boolean (true/false, yes/no, on/off or 1/0): Tahoe refuses \
                 to start"
            ))),
        }
    }

    /// The keys `section` has, its own first, then `[DEFAULT]`'s (configparser's `options`).
    fn options(&self, section: &str) -> Vec<String> {
        let Some(settings) = self.section(section) else {
            return Vec::new();
        };
        let mut keys: Vec<String> = settings.iter().map(|(k, _)| k.clone()).collect();
        for (key, _) in &self.defaults {
            if !keys.contains(key) {
                keys.push(key.clone());
            }
        }
        keys
    }

    /// configparser's BasicInterpolation: `%%` is a percent sign, `%(name)s` the value of `name` in the same
    /// section or `[DEFAULT]`; any other `%` is an error.
    fn interpolate(
        &self,
        section: &str,
        key: &str,
        settings: &Settings,
        mut rest: &str,
        depth: usize,
        out: &mut String,
    ) -> Result<(), NodeDirError> {
        if depth > MAX_INTERPOLATION_DEPTH {
            return Err(self.error(format!(
                "[{section}] {key}: %(…)s references nest deeper than {MAX_INTERPOLATION_DEPTH} (a loop?)"
            )));
        }
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("%%") {
                out.push('%');
                rest = after;
                continue;
            }
            let reference = rest
                .strip_prefix("%(")
                .and_then(|after| after.split_once(")s"))
                .filter(|(name, _)| !name.is_empty() && !name.contains(')'));
            let Some((name, after)) = reference else {
                return Err(self.error(format!(
                    "[{section}] {key}: a '%' that is neither %% nor %(name)s (Python's configparser, which Tahoe \
                     uses, refuses it)"
                )));
            };
            let name = name.to_lowercase();
            let value = self.raw(settings, &name).ok_or_else(|| {
                self.error(format!(
                    "[{section}] {key} refers to %({name})s, which is set neither in [{section}] nor in [DEFAULT]"
                ))
            })?;
            if value.contains('%') {
                self.interpolate(section, key, settings, value, depth + 1, out)?;
            } else {
                out.push_str(value);
            }
            rest = after;
        }
        out.push_str(rest);
        Ok(())
    }
}

/// The name in a `[name]` line: configparser's `\[(?P<header>.+)\]` matched at the start, so anything after the
/// last `]` is ignored.
fn section_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?;
    let end = inner.rfind(']')?;
    Some(&inner[..end]).filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::PublicKeyData;
    use sha2::Sha256;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const SWISSNUM: &str = "carjkw7k357zkgnvmwewol4dhw5g5eqj";
    /// A real node's public key (its permutation-seed file is in the seed test below); any 32 bytes would do.
    const PUBKEY_BASE32: &str = "wdcfk4q7pwni76tf7aqbpw7mzowirp3x2a4qpfe743s2jpqyzreq";
    const LOCATION: &str = "tcp:127.0.0.1:64784";

    /// A hand-made storage node directory, removed on drop unless the test failed.
    struct FakeNode {
        dir: PathBuf,
        /// The certificate's SPKI hash as NURLs carry it, computed from the key rather than the certificate.
        spki_hash_b64: String,
        tubid_base32: String,
    }

    impl FakeNode {
        /// A node as `tahoe create-node` and a first start leave it, at `LOCATION`, without a permutation seed.
        fn new() -> FakeNode {
            static SEQ: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tahoe-mount-node-dir-{}-{}",
                std::process::id(),
                SEQ.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(dir.join("private")).unwrap();
            let certified =
                rcgen::generate_simple_self_signed(vec!["newpb_thingy".to_owned()]).unwrap();
            let node = FakeNode {
                dir,
                spki_hash_b64: data_encoding::BASE64URL_NOPAD.encode(&Sha256::digest(
                    certified.signing_key.subject_public_key_info(),
                )),
                tubid_base32: base32::encode(&sha1::Sha1::digest(certified.cert.der())),
            };
            node.write(
                "private/node.pem",
                &format!(
                    "{}{}",
                    certified.cert.pem(),
                    certified.signing_key.serialize_pem()
                ),
            );
            node.write("node.pubkey", &format!("pub-v0-{PUBKEY_BASE32}\n"));
            node.set_cfg(
                "[node]\nnickname = storage0\ntub.port = tcp:64784\n",
                LOCATION,
                "",
            );
            node
        }

        fn write(&self, name: &str, text: &str) {
            fs::write(self.dir.join(name), text).unwrap();
        }

        fn remove(&self, name: &str) {
            fs::remove_file(self.dir.join(name)).unwrap();
        }

        /// Writes tahoe.cfg (`node` is the [node] section without tub.location, `storage` extra [storage]
        /// lines) and the fURL a start with that location writes.
        fn set_cfg(&self, node: &str, location: &str, storage: &str) {
            self.write(
                "tahoe.cfg",
                &format!("# -*- mode: conf -*-\n{node}tub.location = {location}\n\n[storage]\nenabled = true\n{storage}"),
            );
            self.write(
                "private/storage.furl",
                &format!("{}\n", self.furl(location)),
            );
        }

        fn furl(&self, location: &str) -> String {
            format!("pb://{}@{location}/{SWISSNUM}", self.tubid_base32)
        }

        fn nurl(&self, host_port: &str) -> String {
            format!("pb://{}@{host_port}/{SWISSNUM}#v=1", self.spki_hash_b64)
        }

        fn read(&self) -> Result<NodeAnnouncement, NodeDirError> {
            read_node_dir(&self.dir)
        }

        /// The error reading the node gives; it must name `file`.
        fn error(&self, file: &str) -> String {
            let err = self.read().unwrap_err();
            assert_eq!(err.path, self.dir.join(file), "{err}");
            assert!(
                err.to_string()
                    .starts_with(&format!("{}: ", err.path.display()))
            );
            assert!(
                !err.to_string().contains(SWISSNUM),
                "errors never show the swissnum: {err}"
            );
            err.problem
        }
    }

    impl Drop for FakeNode {
        fn drop(&mut self) {
            if !std::thread::panicking() {
                let _ = fs::remove_dir_all(&self.dir);
            }
        }
    }

    fn nurl_texts(ann: &NodeAnnouncement) -> Vec<&str> {
        ann.ann["anonymous-storage-NURLs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect()
    }

    #[test]
    fn a_storage_node_announces_what_tahoe_would() {
        let node = FakeNode::new();
        node.write("permutation-seed", "r7ivujvxn5s64eh4t5vm3opyugqx6sqn\n");
        node.set_cfg(
            "[node]\nnickname = Stöckchen ☃\ntub.port = tcp:64784\n",
            LOCATION,
            "",
        );
        let ann = node.read().unwrap();
        assert_eq!(ann.server_id, format!("v0-{PUBKEY_BASE32}"));
        let nurl = node.nurl("127.0.0.1:64784");
        assert_eq!(nurl_texts(&ann), [nurl.as_str()]);
        assert_eq!(ann.nurls.len(), 1);
        assert_eq!(ann.nurls[0].to_string(), nurl);
        assert_eq!(ann.nurls[0].swissnum, SWISSNUM);
        let expected = serde_json::json!({
            "version": 0,
            "nickname": "Stöckchen ☃",
            "app-versions": [],
            "oldest-supported": "1.0.0",
            "service-name": "storage",
            "permutation-seed-base32": "r7ivujvxn5s64eh4t5vm3opyugqx6sqn",
            "anonymous-storage-NURLs": [nurl],
            "anonymous-storage-FURL": node.furl(LOCATION),
        });
        assert_eq!(Value::Object(ann.ann.clone()), expected);
        let debug = format!("{ann:?}");
        assert!(
            debug.contains(&ann.server_id) && !debug.contains(SWISSNUM),
            "{debug}"
        );
    }

    #[test]
    fn missing_files_are_named() {
        for file in [
            "tahoe.cfg",
            "node.pubkey",
            "private/node.pem",
            "private/storage.furl",
        ] {
            let node = FakeNode::new();
            node.remove(file);
            let problem = node.error(file);
            assert!(problem.starts_with("missing"), "{file}: {problem}");
        }
        let node = FakeNode::new();
        fs::remove_dir_all(node.dir.join("private")).unwrap();
        assert!(node.error("private/node.pem").starts_with("missing"));
    }

    #[test]
    fn each_tcp_hint_gives_one_nurl_in_sorted_order() {
        let node = FakeNode::new();
        let location = "tcp:b.example:2,tcp:a.example:1,tcp:a.example:+0_1,tcp:[::1]x:3";
        node.set_cfg("[node]\n", &location.replace(",tcp:[::1]x:3", ""), "");
        let ann = node.read().unwrap();
        let (a, b) = (node.nurl("a.example:1"), node.nurl("b.example:2"));
        assert_eq!(nurl_texts(&ann), [a.as_str(), b.as_str()]);
        let hosts: Vec<String> = ann.nurls.iter().map(Nurl::endpoint).collect();
        assert_eq!(hosts, ["a.example:1", "b.example:2"]);

        // Tahoe splits a hint at every ':' and cannot start with an IPv6 one.
        node.set_cfg("[node]\n", "tcp:a.example:1,tcp:[::1]:3", "");
        assert!(
            node.error("tahoe.cfg")
                .contains("\"tcp:[::1]:3\" is not scheme:host:port")
        );
        node.set_cfg("[node]\n", "tcp:a.example:http", "");
        assert!(node.error("tahoe.cfg").contains("no port number"));
        node.set_cfg("[node]\n", "tcp:a.example:70000", "");
        assert!(node.error("tahoe.cfg").contains("unusable NURL"));
        node.set_cfg("[node]\n", "tcp:a b:1", "");
        assert!(node.error("tahoe.cfg").contains("unusable NURL"));
    }

    #[test]
    fn hints_that_make_no_nurl_are_skipped() {
        let node = FakeNode::new();
        let location = "i2p:abc.i2p,tcp:h.example:1,legacy.example:7, tcp:spaced.example:3,TCP:upper:4,tor:x.onion:80";
        node.set_cfg("[node]\n", location, "");
        let ann = node.read().unwrap();
        let tor = node.nurl("x.onion:80").replace("pb://", "pb+tor://");
        // Sorted as text, as grid.py sorts them: "pb+tor://" before "pb://".
        assert_eq!(nurl_texts(&ann), [tor, node.nurl("h.example:1")]);
        assert!(ann.nurls[0].tor && !ann.nurls[1].tor);
        assert_eq!(ann.ann["anonymous-storage-FURL"], node.furl(location));

        node.set_cfg("[node]\n", "i2p:abc.i2p,legacy.example:7", "");
        let problem = node.error("tahoe.cfg");
        assert!(
            problem.contains("no tcp: or tor: hint") && problem.contains("legacy.example:7"),
            "{problem}"
        );
        node.set_cfg("[node]\n", "tor:x.example:80", "");
        assert!(node.error("tahoe.cfg").contains("not a .onion address"));
    }

    #[test]
    fn auto_location_is_read_from_the_furl() {
        let node = FakeNode::new();
        node.set_cfg("[node]\n", "AUTO,tcp:h.example:1", "");
        node.write(
            "private/storage.furl",
            &node.furl("tcp:10.0.0.5:64784,tcp:h.example:1"),
        );
        let ann = node.read().unwrap();
        assert_eq!(
            nurl_texts(&ann),
            [node.nurl("10.0.0.5:64784"), node.nurl("h.example:1")]
        );

        // Without tub.location, Tahoe uses AUTO.
        node.write("tahoe.cfg", "[node]\ntub.port = 64784\n");
        node.write("private/storage.furl", &node.furl("tcp:192.168.1.2:64784"));
        assert_eq!(
            nurl_texts(&node.read().unwrap()),
            [node.nurl("192.168.1.2:64784")]
        );

        node.write("tahoe.cfg", "[node]\nreveal-IP-address = false\n");
        assert!(node.error("tahoe.cfg").contains("PrivacyError"));
    }

    #[test]
    fn a_location_the_node_does_not_run_with_is_an_error() {
        let node = FakeNode::new();
        node.set_cfg("[node]\n", LOCATION, "");
        node.write("private/storage.furl", &node.furl("tcp:127.0.0.1:1"));
        assert!(node.error("tahoe.cfg").contains("restart the node"));

        for (node_section, problem) in [
            ("[node]\ntub.port = disabled\n", "tub.port is disabled"),
            ("[node]\ntub.port =\n", "tub.port is empty"),
            ("[node]\nreveal-IP-address = false\n", "PrivacyError"),
        ] {
            node.set_cfg(node_section, LOCATION, "");
            assert!(node.error("tahoe.cfg").contains(problem), "{problem}");
        }
        node.set_cfg("[node]\n", "disabled", "");
        assert!(node.error("tahoe.cfg").contains("tub.location is disabled"));
        node.set_cfg("[node]\nreveal-IP-address = false\n", "tor:x.onion:80", "");
        assert!(node.read().unwrap().nurls[0].tor);
    }

    #[test]
    fn a_node_without_an_anonymous_http_storage_service_is_refused() {
        let node = FakeNode::new();
        for (storage, problem) in [
            ("enabled = false\n", "not a storage node"),
            ("enabled = No\n", "not a storage node"),
            ("anonymous = false\n", "[storage] anonymous is false"),
            ("force_foolscap = true\n", "force_foolscap"),
            ("plugins = tahoe-zkapauthorizer\n", "storage plugin"),
            ("enabled = maybe\n", "not a boolean"),
            ("enabled =\n", "not a boolean"),
        ] {
            // The last value of a repeated key wins.
            node.set_cfg("[node]\n", LOCATION, storage);
            assert!(node.error("tahoe.cfg").contains(problem), "{storage}");
        }
        node.set_cfg("[node]\n", LOCATION, "plugins = ,\nanonymous = on\n");
        node.read().unwrap();
    }

    #[test]
    fn a_broken_certificate_is_named() {
        let node = FakeNode::new();
        let cases = [
            ("not a PEM file at all\n", "no PEM CERTIFICATE block"),
            (
                "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                "no PEM CERTIFICATE block",
            ),
            (
                "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                "unparseable PEM",
            ),
            ("-----BEGIN CERTIFICATE-----\nAAAA\n", "unparseable PEM"),
            (
                "-----BEGIN CERTIFICATE-----\nAAECAwQ=\n-----END CERTIFICATE-----\n",
                "not an X.509 certificate",
            ),
        ];
        for (pem, problem) in cases {
            node.write("private/node.pem", pem);
            let got = node.error("private/node.pem");
            assert!(got.contains(problem), "{pem}: {got}");
        }
        fs::write(node.dir.join("private/node.pem"), [0xff, 0xfe, 0x00, b'\n']).unwrap();
        assert!(
            node.error("private/node.pem")
                .contains("no PEM CERTIFICATE block")
        );
    }

    #[test]
    fn a_furl_of_another_node_or_none_is_named() {
        let node = FakeNode::new();
        node.write(
            "private/storage.furl",
            &node
                .furl(LOCATION)
                .replace(&node.tubid_base32, &"a".repeat(32)),
        );
        assert!(
            node.error("private/storage.furl")
                .contains("belongs to another node")
        );
        node.write("private/storage.furl", &node.nurl("127.0.0.1:64784"));
        assert!(
            node.error("private/storage.furl")
                .contains("not a storage fURL")
        );
        node.write("private/storage.furl", "");
        assert!(
            node.error("private/storage.furl")
                .contains("not a storage fURL")
        );
    }

    #[test]
    fn a_bad_public_key_is_named() {
        let node = FakeNode::new();
        for text in [
            "v0-abc",
            "pub-v0-abc",
            &format!("pub-v0-{}", "1".repeat(52)),
        ] {
            node.write("node.pubkey", text);
            assert!(
                node.error("node.pubkey")
                    .contains("not an ed25519 public key"),
                "{text}"
            );
        }
    }

    #[test]
    fn the_nickname_is_unspecified_when_unset() {
        let node = FakeNode::new();
        node.set_cfg("[node]\n", LOCATION, "");
        assert_eq!(node.read().unwrap().ann["nickname"], "<unspecified>");
        node.set_cfg("[node]\nnickname =\n", LOCATION, "");
        assert_eq!(node.read().unwrap().ann["nickname"], "");
        node.set_cfg("[node]\nNickName = 100%% disk\n", LOCATION, "");
        assert_eq!(node.read().unwrap().ann["nickname"], "100% disk");
    }

    #[test]
    fn the_permutation_seed_is_derived_as_tahoe_would_without_writing_it() {
        let node = FakeNode::new();
        // The base32 of the key's base32 text (client.py _init_permutation_seed), as a real node's file shows.
        let from_key =
            "o5sggztlgryto4dxnzutontumy3wc4lcob3to3l2n53ws4tqgn4deyjuofygmzjxgqzxgmtkobyxs6tsmvyq";
        assert_eq!(
            node.read().unwrap().ann["permutation-seed-base32"],
            from_key
        );
        node.write("permutation-seed", " \n");
        assert_eq!(
            node.read().unwrap().ann["permutation-seed-base32"],
            from_key
        );
        fs::remove_file(node.dir.join("permutation-seed")).unwrap();

        fs::create_dir_all(node.dir.join("storage/shares/incoming")).unwrap();
        assert_eq!(
            node.read().unwrap().ann["permutation-seed-base32"],
            from_key
        );
        // A node that held shares before the seed file existed keeps its tub id as the seed.
        fs::create_dir_all(node.dir.join("storage/shares/ab")).unwrap();
        assert_eq!(
            node.read().unwrap().ann["permutation-seed-base32"],
            node.tubid_base32.as_str()
        );
        // storage_dir moves the shares.
        node.set_cfg("[node]\n", LOCATION, "storage_dir = elsewhere\n");
        assert_eq!(
            node.read().unwrap().ann["permutation-seed-base32"],
            from_key
        );
        assert!(
            !node.dir.join("permutation-seed").exists(),
            "nothing is written into the node directory"
        );

        node.write("permutation-seed", "not base32!\n");
        assert!(
            node.error("permutation-seed")
                .contains("not a base32 permutation seed")
        );
    }

    #[test]
    fn grid_manager_certificates_are_announced_when_enabled() {
        let node = FakeNode::new();
        node.write(
            "gm.cert",
            r#"{"certificate": "{\"expires\": 1}", "signature": "c2ln"}"#,
        );
        let storage = "grid_management = true\n[grid_manager_certificates]\ndefault = gm.cert\n";
        node.set_cfg("[node]\n", LOCATION, storage);
        let ann = node.read().unwrap();
        assert_eq!(
            ann.ann["grid-manager-certificates"],
            serde_json::json!([{"certificate": "{\"expires\": 1}", "signature": "c2ln"}])
        );
        node.write("gm.cert", r#"{"certificate": "x"}"#);
        assert!(
            node.error("gm.cert")
                .contains("not a Grid Manager certificate")
        );
        node.set_cfg("[node]\n", LOCATION, "grid_management = true\n");
        assert!(!node.read().unwrap().ann.contains_key("storage-options"));
    }

    #[test]
    fn oversized_and_odd_files_are_refused() {
        let node = FakeNode::new();
        node.write("node.pubkey", &"x".repeat(MAX_FILE_BYTES as usize + 1));
        assert!(node.error("node.pubkey").contains("larger than"));
        fs::remove_file(node.dir.join("node.pubkey")).unwrap();
        fs::create_dir(node.dir.join("node.pubkey")).unwrap();
        assert!(node.error("node.pubkey").contains("not a regular file"));
        fs::write(node.dir.join("tahoe.cfg"), [b'[', 0xff, b']']).unwrap();
        assert!(node.error("tahoe.cfg").contains("not UTF-8"));
    }

    #[test]
    fn the_gsa_writecap_lives_in_private() {
        assert_eq!(
            default_gsa_writecap_path(Path::new("/var/tahoe")),
            Path::new("/var/tahoe/private/gsa.writecap")
        );
    }

    // tahoe.cfg as Python's configparser reads it.

    fn cfg(text: &str) -> TahoeCfg {
        TahoeCfg::parse(Path::new("tahoe.cfg"), text).unwrap()
    }

    fn get(cfg: &TahoeCfg, section: &str, key: &str) -> Option<String> {
        cfg.get(section, key).unwrap()
    }

    #[test]
    fn cfg_sections_keys_comments_and_continuations() {
        let c = cfg(concat!(
            "\u{feff}# comment\n",
            "[node]\r\n",
            "NickName : a = b # not a comment\n",
            "  ; a comment inside a value is dropped\n",
            "\tsecond line\n",
            "\n",
            "   third line\n",
            "\n",
            "empty =\n",
            "[Node] trailing text\n",
            "other=x\n",
            "[node]\n",
            "late = 1\n",
            "other = y\n",
        ));
        assert_eq!(
            get(&c, "node", "nickname").as_deref(),
            Some("a = b # not a comment\nsecond line\n\nthird line")
        );
        assert_eq!(get(&c, "node", "EMPTY").as_deref(), Some(""));
        assert_eq!(get(&c, "node", "late").as_deref(), Some("1"));
        assert_eq!(get(&c, "Node", "other").as_deref(), Some("x"));
        assert_eq!(get(&c, "node", "other").as_deref(), Some("y"));
        assert_eq!(get(&c, "node", "missing"), None);
        assert_eq!(get(&c, "storage", "enabled"), None);
    }

    #[test]
    fn cfg_defaults_and_interpolation() {
        let c = cfg(concat!(
            "[DEFAULT]\nhost = example.org\nport = 1\n",
            "[node]\nport = 2\ntub.location = tcp:%(host)s:%(PORT)s,%(deep)s\ndeep = %(deeper)s\ndeeper = 100%%\n",
            "loop = %(loop)s\nlone = 5%\nunknown = %(nope)s\nbroken = %(host\n",
        ));
        assert_eq!(
            get(&c, "node", "tub.location").as_deref(),
            Some("tcp:example.org:2,100%")
        );
        assert_eq!(get(&c, "node", "host").as_deref(), Some("example.org"));
        assert_eq!(
            get(&c, "other", "host"),
            None,
            "no section, no DEFAULT either"
        );
        assert_eq!(
            c.options("node")[..2],
            ["port".to_owned(), "tub.location".to_owned()]
        );
        assert!(c.options("node").contains(&"host".to_owned()));
        for (key, problem) in [
            ("loop", "nest deeper"),
            ("lone", "neither %% nor"),
            ("unknown", "%(nope)s"),
            ("broken", "neither %% nor"),
        ] {
            let err = c.get("node", key).unwrap_err();
            assert!(err.problem.contains(problem), "{key}: {err}");
        }
    }

    #[test]
    fn cfg_syntax_errors_give_the_line() {
        for (text, problem) in [
            (
                "key = value\n",
                "line 1: a setting before any [section] header",
            ),
            ("[node]\nok = 1\njust words\n", "[3]"),
            ("[node]\n= value\n", "[2]"),
            ("[]\n", "line 1: a setting before any [section] header"),
            ("[node]\n[]\n", "[2]"),
        ] {
            let err = TahoeCfg::parse(Path::new("tahoe.cfg"), text).err().unwrap();
            assert!(err.problem.contains(problem), "{text:?}: {err}");
        }
    }
}
