//! The `loupe` binary: the Lambda extension (no arguments) or `loupe check` (with the default
//! `check` feature; the layer's build leaves it out).

use std::process::ExitCode;

use loupe::config::Config;

fn main() -> ExitCode {
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    // `check` is a terminal command: it reads no extension configuration (and so prints no
    // configuration warning).
    if first.as_deref() == Some("check".as_ref()) {
        std::process::exit(check(args));
    }
    if matches!(
        first.as_ref().and_then(|a| a.to_str()),
        Some("--version" | "-V")
    ) {
        println!("loupe {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    let (config, warnings) = Config::from_env();
    loupe::logging::init(config.log_level);
    for w in &warnings {
        log::warn!("{w}");
    }
    // current_thread: on a fraction of a vCPU a multi-thread runtime costs init time and memory
    // for nothing.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(loupe::extension::run(config))
}

#[cfg(feature = "check")]
fn check(args: impl Iterator<Item = std::ffi::OsString>) -> i32 {
    loupe::check::main(args)
}

/// The layer's binary is built without `check` (it never runs inside Lambda, and the layer has a
/// size budget): say where to get it.
#[cfg(not(feature = "check"))]
fn check(_: impl Iterator<Item = std::ffi::OsString>) -> i32 {
    eprintln!(
        "loupe check: this loupe binary (the Lambda layer's) is built without `check`; \
         use the release binary or `cargo install --path .`"
    );
    2
}
