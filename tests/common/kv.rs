//! The example key-value services (examples/README.md) as the tests
//! run them: a launcher script per service that records the pid of every
//! generation, picks the library (LD_LIBRARY_PATH for C, C++ and Go, whose
//! RUNPATH it overrides, HANDOFF_LIBRARY for Python) and sends stderr to a
//! log. The launcher `exec`s the service, so its pid is the service's (the
//! supervisor checks the successor's pid with SO_PEERCRED).
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lang {
    C,
    Python,
    Go,
    Cpp,
    Rust,
}

pub const LANGS: [Lang; 5] = [Lang::C, Lang::Python, Lang::Go, Lang::Cpp, Lang::Rust];

impl Lang {
    /// The name in reports, and the tag in `PONG <pid> <tag>`.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::C => "c",
            Lang::Python => "python",
            Lang::Go => "go",
            Lang::Cpp => "cpp",
            Lang::Rust => "rust",
        }
    }

    pub fn short(self) -> &'static str {
        match self {
            Lang::C => "c",
            Lang::Python => "py",
            Lang::Go => "go",
            Lang::Cpp => "cpp",
            Lang::Rust => "rs",
        }
    }

    /// Whether the service hands its connections to a successor that
    /// adopts them (protocol v2) instead of closing them in the drain.
    pub fn moves_connections(self) -> bool {
        matches!(
            self,
            Lang::C | Lang::Python | Lang::Go | Lang::Cpp | Lang::Rust
        )
    }

    /// The language `n` places after this one in C, Python, Go, C++, Rust.
    pub fn after(self, n: usize) -> Lang {
        let at = LANGS.iter().position(|&l| l == self).unwrap_or(0);
        LANGS[(at + n) % LANGS.len()]
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The program and leading arguments that run `lang`'s service; panics
/// with what to build when it is missing.
pub fn service_argv(lang: Lang) -> Vec<PathBuf> {
    let root = root();
    let argv = match lang {
        Lang::C => vec![root.join("examples/c/build/kv-c")],
        Lang::Go => vec![root.join("examples/go/build/kv-go")],
        Lang::Cpp => vec![root.join("examples/cpp/build/kv-cpp")],
        Lang::Rust => vec![root.join("target/release/examples/kv-rust")],
        Lang::Python => vec![
            root.join("target/venv/bin/python"),
            root.join("examples/python/kv.py"),
        ],
    };
    for path in &argv {
        assert!(
            path.exists(),
            "{} is missing: run `make build venv` first",
            path.display()
        );
    }
    argv
}

/// A single-quoted shell word.
fn quote(path: &Path) -> String {
    let text = path.to_str().expect("UTF-8 path");
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// What a launcher does besides exec'ing the service.
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// `pid=<pid> <tag>` is appended here by every generation.
    pub report: Option<PathBuf>,
    /// The directory holding the libhandoff.so to load (default: the
    /// service's own RUNPATH, target/release); kv-rust, which links the
    /// crate in, is run from its `examples/` there.
    pub lib_dir: Option<PathBuf>,
    /// stderr is appended here (default: inherited).
    pub log: Option<PathBuf>,
    /// `ulimit -n` for the service.
    pub nofile: Option<u64>,
    /// Extra arguments after the supervisor's.
    pub extra_args: Vec<String>,
}

/// Write an executable launcher for `lang` at `path`.
pub fn write_launcher(path: &Path, lang: Lang, options: &LaunchOptions) -> PathBuf {
    let mut script = String::from("#!/bin/sh\n");
    if let Some(report) = &options.report {
        script.push_str(&format!(
            "echo \"pid=$$ {}\" >> {}\n",
            lang.tag(),
            quote(report)
        ));
    }
    let lib_dir = options
        .lib_dir
        .clone()
        .unwrap_or_else(|| root().join("target/release"));
    script.push_str(&format!("export LD_LIBRARY_PATH={}\n", quote(&lib_dir)));
    script.push_str(&format!(
        "export HANDOFF_LIBRARY={}\n",
        quote(&lib_dir.join("libhandoff.so"))
    ));
    if let Some(n) = options.nofile {
        script.push_str(&format!("ulimit -n {n} || exit 1\n"));
    }
    let program = match (&options.lib_dir, lang) {
        // kv-rust links the crate in: the build beside that library.
        (Some(dir), Lang::Rust) => vec![dir.join("examples/kv-rust")],
        _ => service_argv(lang),
    };
    let argv: Vec<String> = program.iter().map(|p| quote(p)).collect();
    let extra: Vec<String> = options
        .extra_args
        .iter()
        .map(|a| quote(Path::new(a)))
        .collect();
    script.push_str(&format!(
        "exec {} \"$@\" {}",
        argv.join(" "),
        extra.join(" ")
    ));
    if let Some(log) = &options.log {
        script.push_str(&format!(" 2>>{}", quote(log)));
    }
    script.push('\n');
    fs::write(path, script).expect("writing a launcher");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod launcher");
    path.to_owned()
}
