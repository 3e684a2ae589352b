//! loupe-local: runs a function and its extensions like the Lambda service does, on this machine.
//! Usage: `loupe-local [OPTIONS] -- RUNTIME_COMMAND [ARGS...]` (`--help` for the options).

fn main() {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    std::process::exit(loupe::local::run(&argv));
}
