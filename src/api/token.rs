//! The token file (`api_token_file`): where the TCP listener's token lives
//! so that the CLI of a member of the daemon's group can read it too.
//!
//! Created at the daemon's first start when configured but missing: 32
//! random bytes as hex, mode 0640 (the daemon's user writes it, its group
//! reads it, no one else). Read by the daemon at start and on SIGHUP, and by
//! the CLI when it talks TCP; surrounding whitespace (a final newline) is
//! not part of the token.

use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Whether `token` can be a token: what `Authorization: Bearer TOKEN` can
/// carry — non-blank printable ASCII without spaces. The one rule for
/// `api_token` (config) and the token file.
pub fn valid_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

/// The token in `path`, checked as `api_token` is ([`valid_token`]); the
/// error says which file and why.
pub fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the API token file {} (api_token_file): {e}", path.display()))?;
    let token = text.trim();
    if !valid_token(token) {
        return Err(format!(
            "the API token file {} must hold one non-blank word of printable ASCII (what an HTTP header can carry)",
            path.display()
        ));
    }
    Ok(token.to_string())
}

/// Writes a new random token to `path` (which must not exist), mode 0640.
pub fn create_token_file(path: &Path) -> io::Result<()> {
    let mut random = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut random)?;
    let token: String = random.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o640).open(path)?;
    // The umask may have taken the group's read away: the CLI needs it.
    file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    writeln!(file, "{token}")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_non_blank_printable_ascii_without_spaces() {
        assert!(valid_token("s3cret-T0ken_~!"));
        for bad in ["", " ", "two words", "tab\there", "caf\u{e9}", "new\nline"] {
            assert!(!valid_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_created_token_file_reads_back_and_a_blank_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-token");
        create_token_file(&path).unwrap();
        let token = read_token_file(&path).unwrap();
        assert_eq!(token.len(), 64);
        assert!(create_token_file(&path).is_err(), "an existing file is never replaced");
        std::fs::write(&path, "  \n").unwrap();
        let err = read_token_file(&path).unwrap_err();
        assert!(err.contains("api-token") && err.contains("non-blank"), "{err}");
        let err = read_token_file(&dir.path().join("nope")).unwrap_err();
        assert!(err.contains("cannot read the API token file"), "{err}");
    }
}
