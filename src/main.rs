//! The `loupe` binary: the Lambda extension (no arguments) or `loupe check`.

use loupe::config::Config;

fn main() {
    let mut args = std::env::args_os().skip(1);
    let first = args.next();
    // `check` is a terminal command: it reads no extension configuration (and so prints no
    // configuration warning).
    if first.as_deref() == Some("check".as_ref()) {
        std::process::exit(loupe::check::main(args));
    }
    let (config, warnings) = Config::from_env();
    loupe::logging::init(config.log_level);
    for w in &warnings {
        log::warn!("{w}");
    }
    match first.as_ref().and_then(|a| a.to_str()) {
        Some("--version") | Some("-V") => println!("loupe {}", env!("CARGO_PKG_VERSION")),
        _ => {
            log::error!("the extension loop is not built yet");
            std::process::exit(2);
        }
    }
}
