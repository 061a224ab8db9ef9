//! The image, checked without a container engine: the Dockerfile builds with the
//! committed lock file and a stripped profile, and its runtime stage is a
//! minimal non-root base holding the one binary; `.dockerignore` keeps `target/`,
//! git history and keys out of the build context.

use std::path::Path;

use serde_json::Value;

struct Instruction {
    keyword: String,
    args: String,
}

struct Stage {
    from: String,
    instructions: Vec<Instruction>,
}

fn read(name: &str) -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(name)).unwrap()
}

/// The stages of a Dockerfile (comments dropped, continuations joined).
fn stages(text: &str) -> Vec<Stage> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(part) = line.strip_suffix('\\') {
            current.push_str(part);
            current.push(' ');
            continue;
        }
        current.push_str(line);
        joined.push(std::mem::take(&mut current));
    }
    let mut stages: Vec<Stage> = Vec::new();
    for line in joined {
        let (keyword, args) = line.split_once(' ').unwrap_or((&line, ""));
        let keyword = keyword.to_uppercase();
        if keyword == "FROM" {
            stages.push(Stage {
                from: args.trim().to_string(),
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .expect("an instruction before FROM")
                .instructions
                .push(Instruction {
                    keyword,
                    args: args.trim().to_string(),
                });
        }
    }
    stages
}

fn cargo_toml() -> toml_like::Doc {
    toml_like::parse(&read("Cargo.toml"))
}

/// Just enough TOML for `[section]` `key = value` lines.
mod toml_like {
    pub struct Doc(Vec<(String, String, String)>);

    pub fn parse(text: &str) -> Doc {
        let mut section = String::new();
        let mut out = Vec::new();
        for line in text.lines() {
            let line = line.trim();
            if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                section = s.to_string();
            } else if let Some((k, v)) = line.split_once('=')
                && !line.starts_with('#')
            {
                out.push((
                    section.clone(),
                    k.trim().to_string(),
                    v.trim().trim_matches('"').to_string(),
                ));
            }
        }
        Doc(out)
    }

    impl Doc {
        pub fn get(&self, section: &str, key: &str) -> Option<&str> {
            self.0
                .iter()
                .find(|(s, k, _)| s == section && k == key)
                .map(|(_, _, v)| v.as_str())
        }
    }
}

#[test]
fn the_build_stage_uses_the_lock_file_and_a_stripped_profile() {
    let stages = stages(&read("Dockerfile"));
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let build = &stages[0];
    assert!(build.from.ends_with(" AS build"), "{}", build.from);
    let run: Vec<&Instruction> = build
        .instructions
        .iter()
        .filter(|i| i.keyword == "RUN" && i.args.contains("cargo build"))
        .collect();
    assert_eq!(run.len(), 1);
    let words: Vec<&str> = run[0].args.split_whitespace().collect();
    for must in ["--locked", "--bin", "konsumer", "--profile"] {
        assert!(words.contains(&must), "{must} missing from {}", run[0].args);
    }
    let profile = words[words.iter().position(|w| *w == "--profile").unwrap() + 1];

    let toml = cargo_toml();
    let section = format!("profile.{profile}");
    assert_eq!(
        toml.get(&section, "strip"),
        Some("true"),
        "[{section}] strips"
    );
    assert_eq!(toml.get(&section, "debug"), Some("false"));
    assert_eq!(toml.get(&section, "inherits"), Some("release"));
    for s in ["profile.release", section.as_str()] {
        assert_ne!(
            toml.get(s, "panic"),
            Some("abort"),
            "[{s}]: the webhook turns a handler panic into an answer; abort would drop the connection"
        );
    }
    // The toolchain image is at least the crate's rust-version.
    let wanted: Vec<u32> = toml
        .get("package", "rust-version")
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    let tag = build
        .from
        .split_whitespace()
        .next()
        .unwrap()
        .split(':')
        .nth(1)
        .unwrap();
    let have: Vec<u32> = tag
        .split('-')
        .next()
        .unwrap()
        .split('.')
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(
        have >= wanted,
        "rust:{tag} is older than rust-version {wanted:?}"
    );

    // The runtime stage copies the binary of exactly that profile.
    let runtime = &stages[1];
    let copy = runtime
        .instructions
        .iter()
        .find(|i| i.keyword == "COPY")
        .unwrap();
    assert!(
        copy.args
            .starts_with(&format!("--from=build /src/target/{profile}/konsumer ")),
        "{}",
        copy.args
    );
}

#[test]
fn the_runtime_stage_is_a_minimal_non_root_base_holding_only_the_binary() {
    let stages = stages(&read("Dockerfile"));
    let runtime = &stages[1];
    assert!(
        runtime.from.starts_with("gcr.io/distroless/") && runtime.from.ends_with(":nonroot"),
        "{}",
        runtime.from
    );
    let files: Vec<&Instruction> = runtime
        .instructions
        .iter()
        .filter(|i| matches!(i.keyword.as_str(), "COPY" | "ADD" | "RUN"))
        .collect();
    assert_eq!(files.len(), 1, "only the binary enters the runtime stage");
    let binary = files[0].args.split_whitespace().last().unwrap();

    let user = runtime
        .instructions
        .iter()
        .find(|i| i.keyword == "USER")
        .expect("a USER")
        .args
        .clone();
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .expect("a numeric user");
    assert_ne!(uid, 0);
    let deployment: Value =
        serde_saphyr::from_str(&read("manifests/base/deployment.yaml")).unwrap();
    let security = &deployment["spec"]["template"]["spec"]["securityContext"];
    assert_eq!(
        security["runAsUser"], uid,
        "the Deployment runs as the image's user"
    );

    let entrypoint = runtime
        .instructions
        .iter()
        .find(|i| i.keyword == "ENTRYPOINT")
        .unwrap();
    let entrypoint: Vec<String> = serde_json::from_str(&entrypoint.args).unwrap();
    assert_eq!(entrypoint, [binary]);
    let exposed: Vec<&str> = runtime
        .instructions
        .iter()
        .filter(|i| i.keyword == "EXPOSE")
        .flat_map(|i| i.args.split_whitespace())
        .collect();
    for port in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
        .as_array()
        .unwrap()
    {
        let port = port["containerPort"].as_i64().unwrap().to_string();
        assert!(exposed.contains(&port.as_str()), "EXPOSE {port}");
    }
}

#[test]
fn the_build_context_leaves_out_target_git_and_keys() {
    let ignore = read(".dockerignore");
    let patterns: Vec<&str> = ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    for must in ["target/", ".git/", "**/*.key", "**/.konsumer/"] {
        assert!(patterns.contains(&must), "{must} not in .dockerignore");
    }
    // What the build needs stays in.
    for needed in ["src/", "Cargo.toml", "Cargo.lock", "benches/"] {
        assert!(
            !patterns
                .iter()
                .any(|p| p.trim_end_matches('/') == needed.trim_end_matches('/')),
            "{needed} must not be ignored"
        );
    }
}
