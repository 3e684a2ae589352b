//! The `loupe` binary: the Lambda extension (no arguments) or `loupe check`.

use loupe::config::Config;

fn main() {
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
            log::error!("the extension loop is not built yet");
            std::process::exit(2);
        }
    }
}
