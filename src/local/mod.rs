//! loupe-local: a local Lambda for one execution environment. It serves the Runtime, Extensions,
//! Telemetry and Logs APIs on 127.0.0.1, runs a runtime command and every extension beside it,
//! and reports what happened. Used by the demo and the tests; never part of the layer.
//!
//! In: command-line options (see [`args::USAGE`]). Out: a summary on stdout, the processes'
//! output on stderr (prefixed), and with `--report FILE` a JSON report ([`report::RunReport`]).
//!
//! What it does like Lambda, and where it differs, is documented in `docs/loupe-local.md`.

pub mod api;
pub mod args;
pub mod process;
pub mod records;
pub mod report;
pub mod sandbox;
pub mod telemetry;
pub mod util;

use std::path::Path;

use tokio::sync::mpsc;

/// Why loupe-local could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Args(#[from] args::ArgsError),
    #[error("cannot read payloads from {path}: {source}")]
    Payloads {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a JSON document")]
    BadPayload { path: String, line: usize },
    #[error("cannot serve the APIs on 127.0.0.1: {0}")]
    Bind(std::io::Error),
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write the report to {path}: {source}")]
    Report {
        path: String,
        source: std::io::Error,
    },
}

/// Non-empty lines of a payloads file, each checked to be JSON.
pub fn read_payloads(path: &Path) -> Result<Vec<String>, Error> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| Error::Payloads {
        path: shown.clone(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if serde_json::from_str::<serde_json::Value>(line).is_err() {
            return Err(Error::BadPayload {
                path: shown,
                line: i + 1,
            });
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// Runs loupe-local with the arguments after the program name; returns the process exit code.
pub fn run(argv: &[String]) -> i32 {
    match try_run(argv) {
        Ok(()) => 0,
        Err(Error::Args(args::ArgsError::Help)) => {
            print!("{}", args::USAGE);
            0
        }
        Err(e @ Error::Args(_)) => {
            eprintln!("loupe-local: {e}\n\n{}", args::USAGE);
            2
        }
        Err(e) => {
            eprintln!("loupe-local: {e}");
            1
        }
    }
}

fn try_run(argv: &[String]) -> Result<(), Error> {
    let opts = args::parse(argv)?;
    let payloads = match &opts.payloads {
        args::PayloadSource::Fixed(p) => vec![p.clone()],
        args::PayloadSource::File(path) => read_payloads(path)?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let report = rt.block_on(async {
        let (tx, rx) = mpsc::channel(256);
        let addr = api::serve(opts.port, tx).await.map_err(Error::Bind)?;
        eprintln!("loupe-local: APIs on {addr}");
        let report_path = opts.report.clone();
        let report = sandbox::Sandbox::new(opts, payloads, addr, rx).run().await;
        Ok::<_, Error>((report, report_path))
    })?;
    let (report, path) = report;
    print!("{}", report::summary(&report));
    if let Some(path) = path {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        std::fs::write(&path, text).map_err(|source| Error::Report {
            path: path.display().to_string(),
            source,
        })?;
    }
    Ok(())
}
