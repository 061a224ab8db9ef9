//! `konsumer validate -f FILE...`: the validating webhook's rules, offline, so
//! manifests can be linted in CI before they reach a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::cli::{Output, read_input};
use crate::store::local::is_consumer_document;
use crate::validation::{self, Report};

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Manifest files (multi-document YAML or JSON) or directories of them (their
    /// .yaml, .yml and .json files); `-` reads stdin. Documents that are not
    /// Consumers are skipped.
    #[arg(
        short = 'f',
        long = "filename",
        required = true,
        value_name = "FILE|DIR"
    )]
    pub files: Vec<PathBuf>,
    /// Also the files in subdirectories of a directory given with -f.
    #[arg(short = 'R', long, env = "KONSUMER_VALIDATE_RECURSIVE")]
    pub recursive: bool,
    /// Output format.
    #[arg(
        short = 'o',
        long,
        env = "KONSUMER_OUTPUT",
        value_enum,
        default_value = "text"
    )]
    pub output: Output,
    /// Fail on warnings too.
    #[arg(long, env = "KONSUMER_WARNINGS_AS_ERRORS")]
    pub warnings_as_errors: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorView {
    pub field: String,
    pub reason: String,
    pub message: String,
}

/// The verdict on one document.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DocumentResult {
    pub file: String,
    /// 1-based position in the file.
    pub document: usize,
    pub consumer: String,
    pub valid: bool,
    pub errors: Vec<ErrorView>,
    pub warnings: Vec<String>,
}

/// A file that could not be read at all.
#[derive(Debug, Serialize)]
pub struct FileProblem {
    pub file: String,
    pub problem: String,
}

fn key_of(doc: &Value) -> String {
    let meta = |k: &str| {
        doc.pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    let ns = match meta("namespace") {
        "" => "default",
        ns => ns,
    };
    format!("{ns}/{}", meta("name"))
}

/// Validates every Consumer document of `text`.
pub fn validate_text(file: &str, text: &str) -> Result<Vec<DocumentResult>, String> {
    let docs: Vec<Value> = crate::manifest::documents(text)?;
    let mut out = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        if !is_consumer_document(doc) {
            continue;
        }
        let report: Report = validation::validate(doc, None, validation::version_of(doc));
        out.push(DocumentResult {
            file: file.to_string(),
            document: i + 1,
            consumer: key_of(doc),
            valid: report.is_valid(),
            errors: report
                .errors
                .iter()
                .map(|e| ErrorView {
                    field: e.field.to_string(),
                    reason: e.reason().to_string(),
                    message: e.to_string(),
                })
                .collect(),
            warnings: report.warnings,
        });
    }
    Ok(out)
}

fn render_text(results: &[DocumentResult], problems: &[FileProblem]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for p in problems {
        let _ = writeln!(out, "{}: error: {}", p.file, p.problem);
    }
    for r in results {
        let verdict = if r.valid {
            "valid".to_string()
        } else {
            format!(
                "invalid ({} error{})",
                r.errors.len(),
                if r.errors.len() == 1 { "" } else { "s" }
            )
        };
        let _ = writeln!(
            out,
            "{} (document {}): Consumer {}: {verdict}",
            r.file, r.document, r.consumer
        );
        for e in &r.errors {
            let _ = writeln!(out, "  error: {}", e.message);
        }
        for w in &r.warnings {
            let _ = writeln!(out, "  warning: {w}");
        }
    }
    out
}

/// The manifest files behind `paths`: a directory stands for its `.yaml`, `.yml`
/// and `.json` files in name order (and its subdirectories' with `recursive`),
/// hidden ones left out, as `kubectl apply -f DIR` reads them.
pub fn expand(paths: &[PathBuf], recursive: bool) -> Result<Vec<PathBuf>, FileProblem> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() != "-" && path.is_dir() {
            walk(path, recursive, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

fn walk(dir: &std::path::Path, recursive: bool, out: &mut Vec<PathBuf>) -> Result<(), FileProblem> {
    let problem = |e: std::io::Error| FileProblem {
        file: dir.display().to_string(),
        problem: e.to_string(),
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(problem)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            !p.file_name()
                .and_then(|n| n.to_str())
                .is_none_or(|n| n.starts_with('.'))
        })
        .collect();
    entries.sort();
    for entry in entries {
        if entry.is_dir() {
            if recursive {
                walk(&entry, recursive, out)?;
            }
        } else if matches!(
            entry.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(entry);
        }
    }
    Ok(())
}

/// Exit status: 0 all valid, 1 invalid (or warnings with --warnings-as-errors,
/// or no Consumer at all), 2 unreadable input.
pub fn run(args: ValidateArgs) -> ExitCode {
    let mut results = Vec::new();
    let mut problems = Vec::new();
    let files = match expand(&args.files, args.recursive) {
        Ok(files) => files,
        Err(problem) => {
            problems.push(problem);
            Vec::new()
        }
    };
    for path in &files {
        let name = path.display().to_string();
        match read_input(path)
            .map_err(|e| e.root_cause().to_string())
            .and_then(|text| validate_text(&name, &text))
        {
            Ok(mut r) => results.append(&mut r),
            Err(problem) => problems.push(FileProblem {
                file: name,
                problem,
            }),
        }
    }
    match args.output {
        Output::Text => print!("{}", render_text(&results, &problems)),
        Output::Json => {
            let json = serde_json::json!({ "results": results, "problems": problems });
            println!(
                "{}",
                serde_json::to_string_pretty(&json).unwrap_or_default()
            );
        }
    }
    if !problems.is_empty() {
        return ExitCode::from(2);
    }
    if results.is_empty() {
        eprintln!(
            "error: no Consumer (kind: Consumer, apiVersion: konsumerator.lwolf.org/*) in the given files"
        );
        return ExitCode::from(1);
    }
    let failed = results
        .iter()
        .any(|r| !r.valid || (args.warnings_as_errors && !r.warnings.is_empty()));
    if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_files_are_validated_per_consumer() {
        let text = format!(
            "{}\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c}}\n---\n{}",
            include_str!("../../tests/fixtures/consumer-orders.yaml"),
            include_str!("../../tests/fixtures/consumer-orders.yaml")
                .replace("numPartitions: 10", "numPartitions: 0")
        );
        let results = validate_text("x.yaml", &text).unwrap();
        assert_eq!(results.len(), 2);
        assert!(results[0].valid);
        assert!(!results[1].valid);
        assert_eq!(results[1].document, 3);
        let text = render_text(&results, &[]);
        assert!(
            text.contains("x.yaml (document 3): Consumer streams/orders: invalid (1 error)"),
            "{text}"
        );
        assert!(
            text.contains("  error: spec.numPartitions: Invalid value: 0"),
            "{text}"
        );
    }

    #[test]
    fn a_directory_stands_for_its_manifest_files_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let orders = include_str!("../../tests/fixtures/consumer-orders.yaml");
        std::fs::write(dir.path().join("b.yaml"), orders).unwrap();
        std::fs::write(dir.path().join("a.json"), "{}").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "not a manifest").unwrap();
        std::fs::write(dir.path().join(".hidden.yaml"), orders).unwrap();
        std::fs::create_dir(dir.path().join("team")).unwrap();
        std::fs::write(dir.path().join("team/c.yml"), orders).unwrap();
        let names = |files: Vec<PathBuf>| -> Vec<String> {
            files
                .iter()
                .map(|f| f.strip_prefix(dir.path()).unwrap().display().to_string())
                .collect()
        };
        let flat = expand(&[dir.path().to_path_buf()], false).unwrap();
        assert_eq!(names(flat), ["a.json", "b.yaml"]);
        let deep = expand(&[dir.path().to_path_buf()], true).unwrap();
        assert_eq!(names(deep), ["a.json", "b.yaml", "team/c.yml"]);
        let stdin = expand(&[PathBuf::from("-")], false).unwrap();
        assert_eq!(stdin, [PathBuf::from("-")]);
    }

    #[test]
    fn broken_yaml_is_a_file_problem() {
        assert!(
            validate_text("x.yaml", "a: [b")
                .unwrap_err()
                .contains("not valid YAML")
        );
    }
}
