//! A secret (or config) as a service carries it into its tasks: which object, and the file it
//! becomes inside each task (Docker's `SecretReference` with its `File` target).

use serde::{Deserialize, Serialize};

/// `--secret source=NAME,target=FILE,uid=U,gid=G,mode=M`. A spec written when secrets were plain
/// names still reads (a bare string is the short form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "FileRefRepr")]
pub struct FileRef {
    /// The secret's name.
    pub source: String,
    /// The file inside the task: relative to /run/secrets for a secret, absolute otherwise.
    pub target: String,
    pub uid: u32,
    pub gid: u32,
    /// Permission bits (Docker's default 0444).
    pub mode: u32,
}

/// Docker's default mode of a secret file.
pub const DEFAULT_FILE_MODE: u32 = 0o444;
/// Where secrets appear in a task.
pub const SECRETS_DIR: &str = "/run/secrets";

impl FileRef {
    /// The short form `--secret NAME`: `/run/secrets/NAME`, root-owned, mode 0444.
    pub fn named(source: impl Into<String>) -> FileRef {
        let source = source.into();
        FileRef { target: source.clone(), source, uid: 0, gid: 0, mode: DEFAULT_FILE_MODE }
    }

    /// The short form `--config NAME`: `/NAME`, root-owned, mode 0444.
    pub fn config_named(source: impl Into<String>) -> FileRef {
        let mut r = FileRef::named(source);
        r.target = format!("/{}", r.source);
        r
    }

    /// The path inside the task of a config reference (a relative target is under /).
    pub fn config_path(&self) -> String {
        if self.target.starts_with('/') {
            self.target.clone()
        } else {
            format!("/{}", self.target)
        }
    }

    /// The path inside the task of a secret reference.
    pub fn secret_path(&self) -> String {
        if self.target.starts_with('/') {
            self.target.clone()
        } else {
            format!("{SECRETS_DIR}/{}", self.target)
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileRefRepr {
    Name(String),
    Full { source: String, target: String, uid: u32, gid: u32, mode: u32 },
}

impl From<FileRefRepr> for FileRef {
    fn from(r: FileRefRepr) -> FileRef {
        match r {
            FileRefRepr::Name(n) => FileRef::named(n),
            FileRefRepr::Full { source, target, uid, gid, mode } => FileRef { source, target, uid, gid, mode },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn old_specs_with_plain_names_still_read() {
        let v: Vec<FileRef> = serde_json::from_str(r#"["pw", {"source":"a","target":"b","uid":1,"gid":2,"mode":256}]"#).unwrap();
        assert_eq!(v[0], FileRef::named("pw"));
        assert_eq!(v[0].secret_path(), "/run/secrets/pw");
        assert_eq!(v[1], FileRef { source: "a".into(), target: "b".into(), uid: 1, gid: 2, mode: 0o400 });
        let back: Vec<FileRef> = serde_json::from_str(&serde_json::to_string(&v).unwrap()).unwrap();
        assert_eq!(back, v);
    }
}
