//! loupe-local as a test harness: a fresh directory, the extensions to run (the built `loupe`, or
//! a directory of test extensions), payloads, `--env` settings and flags, and the sample Python
//! function under the real runtime client. [`Sandbox::run`] waits for loupe-local to exit (it
//! ends by itself after the invocations and SHUTDOWN) and returns its output and JSON report.

#![allow(dead_code)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::python::python;

const MANIFEST: &str = env!("CARGO_MANIFEST_DIR");

pub struct Sandbox {
    dir: PathBuf,
    extensions: Option<PathBuf>,
    payloads: Option<Vec<String>>,
    args: Vec<OsString>,
    runtime: Vec<OsString>,
}

/// What loupe-local printed and reported. The sandbox directory is removed on drop.
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub report: Value,
    pub dir: PathBuf,
}

impl Drop for Outcome {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Sandbox {
    /// A sandbox in a fresh temp directory named after the test, with the sample function
    /// (`app.handler` under awslambdaric) as its runtime and no extension.
    pub fn new(name: &str) -> Sandbox {
        let dir = std::env::temp_dir().join(format!("loupe-sandbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Sandbox {
            dir,
            extensions: None,
            payloads: None,
            args: Vec::new(),
            runtime: ["-m", "awslambdaric", "app.handler"]
                .into_iter()
                .map(OsString::from)
                .collect(),
        }
    }

    /// The sandbox's own directory (files a test extension writes can go there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The built `loupe` binary as the only extension, with debug logging.
    pub fn with_loupe(mut self) -> Sandbox {
        let ext = self.dir.join("extensions");
        std::fs::create_dir_all(&ext).expect("extensions dir");
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_loupe"), ext.join("loupe"))
            .expect("link loupe");
        self.extensions = Some(ext);
        self.env("LOUPE_LOG_LEVEL", "debug")
    }

    /// Every executable in `dir` runs as an extension.
    pub fn extensions_dir(mut self, dir: &Path) -> Sandbox {
        self.extensions = Some(dir.to_path_buf());
        self
    }

    /// One invocation per payload, in order.
    pub fn payloads(mut self, payloads: &[&str]) -> Sandbox {
        self.payloads = Some(payloads.iter().map(|p| p.to_string()).collect());
        self
    }

    /// An environment variable for the function and the extensions.
    pub fn env(mut self, key: &str, value: &str) -> Sandbox {
        self.args.push("--env".into());
        self.args.push(format!("{key}={value}").into());
        self
    }

    /// More loupe-local flags.
    pub fn args(mut self, args: &[&str]) -> Sandbox {
        self.args.extend(args.iter().map(OsString::from));
        self
    }

    /// The sample function's handler (default `app.handler`).
    pub fn handler(mut self, handler: &str) -> Sandbox {
        self.runtime = ["-m", "awslambdaric", handler]
            .into_iter()
            .map(OsString::from)
            .collect();
        self
    }

    /// The runtime's Python arguments in place of the runtime client (e.g. `-c SCRIPT`).
    pub fn python_args(mut self, args: &[&str]) -> Sandbox {
        self.runtime = args.iter().map(OsString::from).collect();
        self
    }

    /// Runs loupe-local to its exit; panics (failing the test) if it failed.
    pub fn run(self) -> Outcome {
        let report = self.dir.join("report.json");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_loupe-local"));
        if let Some(ext) = &self.extensions {
            cmd.arg("--extensions-dir").arg(ext);
        }
        if let Some(payloads) = &self.payloads {
            let file = self.dir.join("payloads.jsonl");
            std::fs::write(&file, payloads.join("\n")).expect("payloads");
            cmd.arg("--payloads").arg(file);
        }
        cmd.arg("--task-root")
            .arg(Path::new(MANIFEST).join("examples/python"))
            .arg("--report")
            .arg(&report)
            .args(&self.args)
            .arg("--")
            .arg(python())
            .args(&self.runtime);
        let output = cmd.output().expect("run loupe-local");
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(output.status.success(), "loupe-local failed: {stderr}");
        let report: Value = serde_json::from_slice(&std::fs::read(&report).expect("report"))
            .expect("report is JSON");
        Outcome {
            stdout,
            stderr,
            report,
            dir: self.dir.clone(),
        }
    }
}

impl Outcome {
    /// The status of each invocation, in order.
    pub fn statuses(&self) -> Vec<String> {
        self.report["invocations"]
            .as_array()
            .expect("invocations in the report")
            .iter()
            .map(|i| i["status"].as_str().unwrap_or("?").to_string())
            .collect()
    }

    /// The request id of each invocation, in order.
    pub fn request_ids(&self) -> Vec<String> {
        self.report["invocations"]
            .as_array()
            .expect("invocations in the report")
            .iter()
            .map(|i| i["requestId"].as_str().expect("requestId").to_string())
            .collect()
    }
}
