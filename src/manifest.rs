//! Reading the YAML and JSON manifests a user hands konsumer (`validate`, `plan`,
//! the local directory): a size cap applied before anything is held in memory
//! (the file's size first, a bounded read for pipes and devices), and a parse
//! budget chosen on purpose, with errors in words.

use std::io::Read;
use std::path::Path;

use serde_json::Value;

/// The largest manifest file read: far above any Consumer (the apiserver takes
/// at most 3 MiB per object), far below what would hurt.
pub const MAX_BYTES: u64 = 8 << 20;

/// The most YAML documents one file may hold.
pub const MAX_DOCUMENTS: usize = 10_000;

/// The deepest nesting of YAML collections.
pub const MAX_DEPTH: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error(
        "{path}: {size} is over konsumer's limit of {max} bytes (8 MiB) for one manifest; split it into smaller files"
    )]
    TooLarge {
        path: String,
        /// "N bytes", or "more than N bytes" for a stream.
        size: String,
        max: u64,
    },
    #[error("{path}: {what}; only regular files are read")]
    NotRegular { path: String, what: String },
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not UTF-8 text")]
    NotText { path: String },
}

impl ManifestError {
    fn io(path: &str, source: std::io::Error) -> Self {
        ManifestError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// What `path` is when it is not a regular file (following symlinks), in words;
/// `Ok(())` for a regular file. Opens nothing, so a FIFO cannot block the caller.
pub fn regular_file(path: &Path) -> Result<(), ManifestError> {
    let shown = path.display().to_string();
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.raw_os_error() == Some(40) => {
            return Err(ManifestError::NotRegular {
                path: shown,
                what: "a symlink loop".into(),
            });
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && path.symlink_metadata().is_ok() => {
            return Err(ManifestError::NotRegular {
                path: shown,
                what: "a symlink to nothing".into(),
            });
        }
        Err(e) => return Err(ManifestError::io(&shown, e)),
    };
    if meta.is_file() {
        return Ok(());
    }
    let what = {
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileTypeExt;
            let t = meta.file_type();
            if t.is_fifo() {
                "a FIFO (named pipe)"
            } else if t.is_char_device() || t.is_block_device() {
                "a device file"
            } else if t.is_socket() {
                "a socket"
            } else if t.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            }
        }
        #[cfg(not(unix))]
        {
            if meta.is_dir() {
                "a directory"
            } else {
                "not a regular file"
            }
        }
    };
    Err(ManifestError::NotRegular {
        path: shown,
        what: what.into(),
    })
}

/// Reads at most [`MAX_BYTES`] from `reader`; more is an error, found after
/// reading one byte past the cap, not after reading everything.
pub fn read_bounded(reader: impl Read, name: &str) -> Result<String, ManifestError> {
    let mut bytes = Vec::new();
    reader
        .take(MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ManifestError::io(name, e))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(ManifestError::TooLarge {
            path: name.to_string(),
            size: format!("more than {MAX_BYTES} bytes"),
            max: MAX_BYTES,
        });
    }
    String::from_utf8(bytes).map_err(|_| ManifestError::NotText {
        path: name.to_string(),
    })
}

/// A regular file, its size checked before it is read.
pub fn read_file(path: &Path) -> Result<String, ManifestError> {
    let shown = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|e| ManifestError::io(&shown, e))?;
    let size = file
        .metadata()
        .map_err(|e| ManifestError::io(&shown, e))?
        .len();
    if size > MAX_BYTES {
        return Err(ManifestError::TooLarge {
            path: shown,
            size: format!("{size} bytes"),
            max: MAX_BYTES,
        });
    }
    read_bounded(file, &shown)
}

/// A manifest named on the command line: `-` is standard input; pipes and
/// devices (`<(…)`, `/dev/stdin`) are read with the cap too.
pub fn read_input(path: &Path) -> Result<String, ManifestError> {
    if path.as_os_str() == "-" {
        return read_bounded(std::io::stdin().lock(), "standard input");
    }
    match regular_file(path) {
        Ok(()) => read_file(path),
        Err(ManifestError::NotRegular { what, .. }) if what.contains("directory") => {
            Err(ManifestError::NotRegular {
                path: path.display().to_string(),
                what,
            })
        }
        Err(ManifestError::NotRegular { .. }) => {
            let shown = path.display().to_string();
            let file = std::fs::File::open(path).map_err(|e| ManifestError::io(&shown, e))?;
            read_bounded(file, &shown)
        }
        Err(e) => Err(e),
    }
}

fn options() -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_documents = MAX_DOCUMENTS;
    budget.max_depth = MAX_DEPTH;
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    options
}

/// A budget breach in words.
fn breach_words(breach: &serde_saphyr::budget::BudgetBreach) -> String {
    use serde_saphyr::budget::BudgetBreach as B;
    match breach {
        B::Documents { .. } => format!(
            "more than {MAX_DOCUMENTS} YAML documents in one file (konsumer's limit); split the file"
        ),
        B::Depth { .. } => {
            format!("nested more than {MAX_DEPTH} levels deep (konsumer's limit)")
        }
        B::Nodes { .. } => "too many YAML nodes in one file; split the file".into(),
        B::Aliases { .. } | B::Anchors { .. } => {
            "too many YAML anchors or aliases (an alias bomb?)".into()
        }
        other => format!("over a YAML parsing limit ({other:?})"),
    }
}

/// The documents of a (multi-document) YAML or JSON text.
pub fn documents(text: &str) -> Result<Vec<Value>, String> {
    serde_saphyr::from_multiple_with_options(text, options()).map_err(|e| {
        match e.without_snippet() {
            serde_saphyr::Error::Budget { breach, .. } => breach_words(breach),
            _ => format!("not valid YAML: {e}"),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_over_the_cap_stops_at_the_cap() {
        let zeros = std::io::repeat(0).take(1 << 40);
        let err = read_bounded(zeros, "/dev/zero").unwrap_err().to_string();
        assert!(err.contains("more than 8388608 bytes"), "{err}");
        assert!(err.contains("limit of 8388608 bytes"), "{err}");
    }

    #[test]
    fn a_large_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let f = std::fs::File::create(&path).unwrap();
        f.set_len(1 << 30).unwrap();
        let err = read_file(&path).unwrap_err().to_string();
        assert!(err.contains("1073741824 bytes is over"), "{err}");
    }

    #[test]
    fn fifos_devices_and_symlink_loops_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe.yaml");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let looped = dir.path().join("loop.yaml");
        std::os::unix::fs::symlink(&looped, &looped).unwrap();
        let dangling = dir.path().join("gone.yaml");
        std::os::unix::fs::symlink(dir.path().join("nothing"), &dangling).unwrap();
        for (path, words) in [
            (fifo.as_path(), "a FIFO"),
            (Path::new("/dev/null"), "a device file"),
            (looped.as_path(), "a symlink loop"),
            (dangling.as_path(), "a symlink to nothing"),
        ] {
            let err = regular_file(path).unwrap_err().to_string();
            assert!(err.contains(words), "{}: {err}", path.display());
        }
    }

    #[test]
    fn more_documents_than_the_limit_are_reported_in_words() {
        let many = "a: 1\n---\n".repeat(MAX_DOCUMENTS + 1);
        let err = documents(&many).unwrap_err();
        assert!(
            err.contains("more than 10000 YAML documents") && !err.contains("Documents {"),
            "{err}"
        );
        let fine = "a: 1\n---\n".repeat(2000);
        assert_eq!(documents(&fine).unwrap().len(), 2000);
    }
}
