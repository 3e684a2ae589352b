//! The `loupe` binary: the Lambda extension (no arguments) or `loupe check`.

use std::process::ExitCode;

use loupe::config::Config;

fn main() -> ExitCode {
    let (config, warnings) = Config::from_env();
    loupe::logging::init(config.log_level);
    for w in &warnings {
        log::warn!("{w}");
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("check") => {
            eprintln!("loupe check: not built yet");
            std::process::exit(2);
        }
        Some("--version") | Some("-V") => println!("loupe {}", env!("CARGO_PKG_VERSION")),
        _ => {
            // current_thread: on a fraction of a vCPU a multi-thread runtime costs init time and
            // memory for nothing.
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
            return runtime.block_on(loupe::extension::run(config));
        }
    }
    ExitCode::SUCCESS
}
