//! The client's configuration directory and the secrets kept there: the convergence secret (which makes
//! uploads of the same file by the same client converge on the same cap) and the lease secret (from which every
//! lease's renew and cancel secrets derive). Both are Tahoe's format: base32 of 32 random bytes and a newline,
//! as in a node's `private/convergence` and `private/secret`, in files only the owner can read.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::crypto::base32;

/// Where the configuration lives when nothing else says: `$TAHOE_MOUNT_CONFIG_DIR`, else
/// `$XDG_CONFIG_HOME/tahoe-mount`, else `~/.config/tahoe-mount`.
pub const CONFIG_DIR_ENV: &str = "TAHOE_MOUNT_CONFIG_DIR";

/// A secret's bytes; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Vec<u8>);

impl Secret {
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(bytes)
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// A configuration problem, naming the file.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {problem}")]
pub struct ConfigError {
    pub path: PathBuf,
    pub problem: String,
}

fn config_error(path: &Path, problem: impl std::fmt::Display) -> ConfigError {
    ConfigError {
        path: path.to_owned(),
        problem: problem.to_string(),
    }
}

/// The configuration directory.
#[derive(Debug, Clone)]
pub struct ConfigDir {
    path: PathBuf,
}

impl ConfigDir {
    /// The directory given, or the default one (see [`CONFIG_DIR_ENV`]).
    pub fn locate(explicit: Option<&Path>) -> Result<ConfigDir, ConfigError> {
        let path = match explicit {
            Some(p) => p.to_owned(),
            None => default_dir().ok_or_else(|| {
                config_error(
                    Path::new("~/.config/tahoe-mount"),
                    "cannot tell where the configuration lives: HOME is not set (use --config-dir)",
                )
            })?,
        };
        Ok(ConfigDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The convergence secret, made on first use.
    pub fn convergence_secret(&self) -> Result<Secret, ConfigError> {
        self.get_or_create_secret("convergence")
    }

    /// The lease secret, made on first use.
    pub fn lease_secret(&self) -> Result<Secret, ConfigError> {
        self.get_or_create_secret("secret")
    }

    fn get_or_create_secret(&self, name: &str) -> Result<Secret, ConfigError> {
        let path = self.path.join(name);
        match fs::symlink_metadata(&path) {
            Ok(_) => read_secret_file(&path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                create_private_dir(&self.path)?;
                create_secret_file(&path)?;
                read_secret_file(&path)
            }
            Err(e) => Err(config_error(&path, e)),
        }
    }
}

fn default_dir() -> Option<PathBuf> {
    let nonempty = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = nonempty(CONFIG_DIR_ENV) {
        return Some(dir.into());
    }
    if let Some(xdg) = nonempty("XDG_CONFIG_HOME") {
        return Some(PathBuf::from(xdg).join("tahoe-mount"));
    }
    nonempty("HOME").map(|home| PathBuf::from(home).join(".config/tahoe-mount"))
}

/// Writes a fresh secret beside `path` and links it into place, so two processes starting at once agree on
/// one secret and neither ever reads a half-written file.
fn create_secret_file(path: &Path) -> Result<(), ConfigError> {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|e| config_error(path, format!("no randomness: {e}")))?;
    let text = format!("{}\n", base32::encode(&random));
    // Another process that got there first made the secret both will use.
    match place_private_file(path, text.as_bytes(), false) {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        other => other.map_err(|e| config_error(path, format!("cannot create: {e}"))),
    }
}

/// Creates `dir` (and its parents) if missing, readable by the owner only.
pub fn create_private_dir(dir: &Path) -> Result<(), ConfigError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| config_error(dir, format!("cannot create: {e}")))
}

/// Writes `bytes` to `path` as a 0600 file, all or nothing: a temporary file beside it is written and synced,
/// then renamed over it (`replace`) or linked into place only if nothing is there yet (`!replace`, which fails
/// with "already exists").
pub fn write_private_file(path: &Path, bytes: &[u8], replace: bool) -> Result<(), ConfigError> {
    place_private_file(path, bytes, replace).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            config_error(path, "already exists; not overwritten")
        } else {
            config_error(path, format!("cannot write: {e}"))
        }
    })
}

/// [`write_private_file`]'s work, with the I/O error as it came.
fn place_private_file(path: &Path, bytes: &[u8], replace: bool) -> std::io::Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut random = [0u8; 6];
    getrandom::fill(&mut random).map_err(std::io::Error::other)?;
    let temp = path.with_file_name(format!(".{name}.{}.tmp", base32::encode(&random)));
    let written = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()
    })();
    let placed = written.and_then(|()| {
        if replace {
            fs::rename(&temp, path)
        } else {
            fs::hard_link(&temp, path)
        }
    });
    let _ = fs::remove_file(&temp);
    placed?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        // The rename is durable only once the directory is synced.
        if let Ok(dir) = fs::File::open(parent) {
            let _ = dir.sync_all();
        }
    }
    Ok(())
}

pub fn read_secret_file(path: &Path) -> Result<Secret, ConfigError> {
    let text = fs::read_to_string(path).map_err(|e| config_error(path, e))?;
    let text = text.trim();
    if text.is_empty() {
        return Err(config_error(path, "the secret file is empty"));
    }
    base32::decode(text)
        .map(Secret)
        .map_err(|e| config_error(path, format!("not a base32 secret: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("tahoe-mount-config-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn secrets_are_made_once_private_and_kept() {
        let dir = temp_dir("make");
        let config = ConfigDir::locate(Some(&dir.join("sub"))).unwrap();
        let first = config.convergence_secret().unwrap();
        assert_eq!(first.bytes().len(), 32);
        assert_eq!(config.convergence_secret().unwrap(), first);
        assert_ne!(config.lease_secret().unwrap(), first);
        let mode = fs::metadata(dir.join("sub/convergence"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(dir.join("sub")).unwrap().permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(format!("{first:?}"), "Secret(..)");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_secret_files_are_named() {
        let dir = temp_dir("bad");
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("convergence");
        fs::write(&path, "not base32!\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_secret_file(&path).unwrap_err().to_string();
        assert!(
            err.contains("convergence") && err.contains("base32"),
            "{err}"
        );
        fs::write(&path, "\n").unwrap();
        assert!(
            read_secret_file(&path)
                .unwrap_err()
                .to_string()
                .contains("empty")
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn private_files_are_0600_whole_and_not_clobbered_unless_asked() {
        let dir = temp_dir("private");
        create_private_dir(&dir).unwrap();
        let path = dir.join("state.json");
        write_private_file(&path, b"one", false).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let err = write_private_file(&path, b"two", false).unwrap_err();
        assert!(err.problem.contains("already exists"), "{err}");
        assert_eq!(fs::read(&path).unwrap(), b"one");
        write_private_file(&path, b"three", true).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"three");
        assert_eq!(
            fs::read_dir(&dir).unwrap().count(),
            1,
            "no temporary file left"
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
