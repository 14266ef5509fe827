//! Secrets of the sink (tokens, passwords, routing keys): read once from an
//! env var or a file, never shown by `Debug`.

use std::fmt;

use crate::config::SecretSource;

use super::SinkBuildError;

/// A secret value; `Debug` never shows it and there is no `Display`.
#[derive(Clone)]
pub(crate) struct Secret(pub(super) String);

impl Secret {
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Reads a secret from its env var or file, trailing newline(s) trimmed.
pub(crate) fn read_secret(field: &'static str, src: &SecretSource) -> Result<Secret, SinkBuildError> {
    let trim = |s: String| s.trim_end_matches(['\n', '\r']).to_owned();
    match (&src.env, &src.file) {
        (Some(_), Some(_)) => Err(SinkBuildError::BothSecretSources { field }),
        (None, None) => Err(SinkBuildError::NoSecretSource { field }),
        (Some(var), None) => {
            let value = match std::env::var(var) {
                Ok(v) => trim(v),
                Err(std::env::VarError::NotPresent) => return Err(SinkBuildError::MissingEnv { field, var: var.clone() }),
                Err(std::env::VarError::NotUnicode(_)) => return Err(SinkBuildError::EnvNotUnicode { field, var: var.clone() }),
            };
            if value.is_empty() {
                return Err(SinkBuildError::EmptyEnv { field, var: var.clone() });
            }
            Ok(Secret(value))
        }
        (None, Some(path)) => {
            let value = std::fs::read_to_string(path).map_err(|source| SinkBuildError::ReadFile { field, path: path.clone(), source })?;
            let value = trim(value);
            if value.is_empty() {
                return Err(SinkBuildError::EmptyFile { field, path: path.clone() });
            }
            Ok(Secret(value))
        }
    }
}

/// A warning when the secret file `src` names can be read by its group or
/// by others (mode bits 0o077), as a secret file should not.
pub(crate) fn loose_permissions(field: &str, src: &SecretSource) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let path = src.file.as_ref()?;
    let mode = std::fs::metadata(path).ok()?.permissions().mode();
    (mode & 0o077 != 0).then(|| {
        format!("{field}: secret file `{}` is readable by group or others (mode {:o}); chmod 600 it", path.display(), mode & 0o777)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_files_open_to_group_or_others_get_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, "t").unwrap();
        let src = SecretSource { env: None, file: Some(path.clone()) };
        for (mode, warned) in [(0o600, false), (0o400, false), (0o640, true), (0o604, true)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let w = loose_permissions("sink.auth.token", &src);
            assert_eq!(w.is_some(), warned, "{mode:o}: {w:?}");
            if let Some(w) = w {
                assert!(w.contains("sink.auth.token") && w.contains("readable by group or others"), "{w}");
            }
        }
        assert_eq!(loose_permissions("x", &SecretSource { env: Some("V".into()), file: None }), None);
    }

    #[test]
    fn secrets_do_not_debug() {
        let s = Secret("hunter2".into());
        assert_eq!(format!("{s:?}"), "[redacted]");
    }
}
